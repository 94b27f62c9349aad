#!/usr/bin/env bash
# Interactive console chat against a llamacy (or llama.cpp) server's /completion endpoint,
# streaming each answer as it is generated. Needs bash, curl and jq.
#
#   bash tools/chat.sh                              # server at http://127.0.0.1:8080
#   API_URL=http://host:8080 API_KEY=secret bash tools/chat.sh
#
# Type a question and press Enter; Ctrl-D (end of input) quits. Questions can also be piped in,
# one per line. Settings come from the environment: API_URL, API_KEY, N_PREDICT (default 256),
# TEMPERATURE (default 0.2).
set -euo pipefail

API_URL="${API_URL:-http://127.0.0.1:8080}"
API_URL="${API_URL%/}"
N_PREDICT="${N_PREDICT:-256}"
TEMPERATURE="${TEMPERATURE:-0.2}"

INSTRUCTION="A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions."
STOP=$'\n### Human:'
# the conversation so far: question, answer, question, answer, ...
HISTORY=("Hello, Assistant." "Hello. How may I help you today?")

CURL=(curl --silent --show-error --fail-with-body --no-buffer --header "Content-Type: application/json")
if [[ -n "${API_KEY:-}" ]]; then
    CURL+=(--header "Authorization: Bearer ${API_KEY}")
fi

format_prompt() {
    local question="$1" i
    printf '%s' "$INSTRUCTION"
    for ((i = 0; i < ${#HISTORY[@]}; i += 2)); do
        printf '\n### Human: %s\n### Assistant: %s' "${HISTORY[i]}" "${HISTORY[i + 1]}"
    done
    printf '\n### Human: %s\n### Assistant:' "$question"
}

trim() {
    local text="$1"
    text="${text#"${text%%[![:space:]]*}"}"
    printf '%s' "${text%"${text##*[![:space:]]}"}"
}

# keep the instruction when the conversation outgrows the context
N_KEEP="$("${CURL[@]}" --request POST --url "${API_URL}/tokenize" \
    --data-raw "$(jq -n --arg content "$INSTRUCTION" '{content: $content}')" | jq '.tokens | length')"

ask() {
    local question="$1" body line answer="" piece
    body="$(format_prompt "$question" | jq -Rs --argjson n_keep "$N_KEEP" --argjson n_predict "$N_PREDICT" \
        --argjson temperature "$TEMPERATURE" --arg stop "$STOP" \
        '{prompt: ., temperature: $temperature, top_k: 40, top_p: 0.9, n_keep: $n_keep,
          n_predict: $n_predict, cache_prompt: true, stop: [$stop], stream: true}')"
    while IFS= read -r line; do
        line="${line#data: }"
        [[ "$line" == "{"* ]] || continue
        if jq -e 'has("error")' <<<"$line" >/dev/null; then    # an HTTP error's body, or an error event
            printf 'chat.sh: %s\n' "$(jq -r '.error.message' <<<"$line")" >&2
            return 1
        fi
        # jq -j prints the text without a newline; the x keeps trailing newlines through $(...)
        piece="$(jq -j '.content' <<<"$line"; printf x)"
        piece="${piece%x}"
        printf '%s' "$piece"
        answer+="$piece"
    done < <("${CURL[@]}" --request POST --url "${API_URL}/completion" --data-raw "$body")
    printf '\n'
    HISTORY+=("$question" "$(trim "$answer")")
}

while true; do
    if [[ -t 0 ]]; then
        read -r -e -p "> " question || break
    else
        IFS= read -r question || break
    fi
    question="$(trim "$question")"
    [[ -n "$question" ]] && ask "$question"
done
