/**
 * completion.js — small client library for the llamacy / llama.cpp HTTP server.
 *
 * Serve this directory with the server's static path option (e.g. `--path webui`)
 * and import the module from your own page:
 *
 *     <html>
 *       <body>
 *         <pre>
 *           <script type="module">
 *             import { llama } from '/completion.js'
 *             const prompt = `### Instruction:
 *     Write dad jokes, each one paragraph.
 *     You can use html formatting if needed.
 *     ### Response:`
 *             for await (const chunk of llama(prompt)) {
 *               document.write(chunk.data.content)
 *             }
 *           </script>
 *         </pre>
 *       </body>
 *     </html>
 *
 * Every function takes an optional `config` object:
 *   - `api_url`    base URL of the server, default '' (same origin as the page);
 *   - `api_key`    sent as `Authorization: Bearer <api_key>` when set;
 *   - `controller` an AbortController; call `controller.abort()` to stop a
 *                  request. The connection is closed and the server frees the slot.
 *
 * Errors: a non-2xx HTTP answer, or an error event inside the stream, throws an
 * Error whose message is the server's `error.message`. The Error also carries
 * `status` (HTTP status, when known), `code` and `type` from the server's
 * `{"error": {"code", "message", "type"}}` body. Stopping via the controller
 * rejects with the usual `AbortError` (a DOMException).
 *
 * This module has no dependencies and makes no requests other than to `api_url`.
 */

/**
 * @typedef {object} LlamaConfig
 * @property {string} [api_url]  Base URL of the server ('' = same origin).
 * @property {string} [api_key]  API key, sent as a Bearer token.
 * @property {AbortController} [controller]  Abort it to stop the request.
 */

/**
 * @typedef {object} ServerSentEvent
 * @property {string} event        The `event:` field, 'message' when absent.
 * @property {string} [data]       The `data:` lines joined with '\n' (undefined if none).
 * @property {string} [error]      A non-standard `error:` field (llama.cpp sends errors
 *                                 in a stream this way), undefined if none.
 * @property {string} [id]         The `id:` field, if any.
 */

/** Builds request headers for a JSON request, with the API key when given. */
function buildHeaders(config, extra = {}) {
  const headers = { 'Content-Type': 'application/json', ...extra };
  if (config.api_key) {
    headers.Authorization = `Bearer ${config.api_key}`;
  }
  return headers;
}

/** Joins the configured base URL and an endpoint path without doubling slashes. */
function endpoint(config, path) {
  const base = config.api_url ?? '';
  return base.replace(/\/+$/, '') + path;
}

/**
 * Turns an error payload (`{"error": {...}}`, a bare `{code, message, type}`,
 * or plain text) into an Error with `status`, `code` and `type` properties.
 * @param {unknown} payload   parsed JSON or a string
 * @param {number} [status]   HTTP status, if known
 * @param {string} [fallback] message to use if the payload carries none
 * @returns {Error}
 */
function toError(payload, status, fallback) {
  if (typeof payload === 'string') {
    try {
      payload = JSON.parse(payload);
    } catch {
      // Not JSON: use the text itself as the message.
      const err = new Error(payload.trim() || fallback || 'Request failed');
      if (status !== undefined) err.status = status;
      return err;
    }
  }
  let info = payload;
  if (info && typeof info === 'object' && 'error' in info) info = info.error;
  let message;
  if (typeof info === 'string') {
    message = info;
  } else if (info && typeof info === 'object' && typeof info.message === 'string') {
    message = info.message;
  }
  const err = new Error(message || fallback || 'Request failed');
  if (info && typeof info === 'object') {
    if (info.code !== undefined) err.code = info.code;
    if (info.type !== undefined) err.type = info.type;
  }
  if (status !== undefined) {
    err.status = status;
  } else if (typeof err.code === 'number') {
    err.status = err.code;
  }
  return err;
}

/** Reads a failed response's body and builds the Error to throw. */
async function httpError(response) {
  let text = '';
  try {
    text = await response.text();
  } catch {
    // Body unreadable (e.g. connection dropped); fall back to the status line.
  }
  const fallback = `HTTP ${response.status}${response.statusText ? ' ' + response.statusText : ''}`;
  return toError(text || fallback, response.status, fallback);
}

/** POSTs JSON and throws on a non-2xx answer. */
async function postJSON(path, body, config, accept) {
  const response = await fetch(endpoint(config, path), {
    method: 'POST',
    headers: buildHeaders(config, accept ? { Accept: accept } : {}),
    body: JSON.stringify(body),
    signal: config.controller?.signal,
  });
  if (!response.ok) {
    throw await httpError(response);
  }
  return response;
}

/**
 * POSTs `body` with `stream: true`. Returns `{response}` holding the event stream, or
 * `{single}` with the parsed body when a server answered with one JSON object instead.
 */
async function openStream(path, body, config) {
  const response = await postJSON(path, { ...body, stream: true }, config, 'text/event-stream');
  const contentType = response.headers.get('Content-Type') || '';
  if (!contentType.includes('application/json')) return { response };
  const single = await response.json();
  if (single && single.error) throw toError(single, response.status);
  return { single };
}

/**
 * Parses a `text/event-stream` response body into events.
 *
 * Follows the server-sent events format: lines end in LF, CRLF or CR; an event
 * ends at a blank line; several `data:` lines are joined with '\n'; lines
 * starting with ':' are comments; one space after the colon is dropped. Network
 * reads may split lines, events and even multi-byte UTF-8 characters anywhere;
 * partial text is buffered until complete. An event left unterminated when the
 * stream ends is still delivered.
 *
 * If the caller stops iterating early (break, return, exception), the body is
 * cancelled, which closes the connection.
 *
 * @example
 *   for await (const ev of readEventStream(response)) console.log(ev.data)
 * @param {Response} response  a fetch Response whose body is an event stream
 * @returns {AsyncGenerator<ServerSentEvent>}
 */
export async function* readEventStream(response) {
  if (!response.body) return;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let finished = false;
  // Fields of the event being assembled.
  let dataLines = [];
  let fields = {};

  // Completes the current event, if it has any content, and resets the state.
  const takeEvent = () => {
    const hasData = dataLines.length > 0;
    if (!hasData && fields.error === undefined) {
      dataLines = [];
      fields = {};
      return null;
    }
    const ev = {
      event: fields.event || 'message',
      data: hasData ? dataLines.join('\n') : undefined,
      error: fields.error,
      id: fields.id,
    };
    dataLines = [];
    fields = {};
    return ev;
  };

  // Handles one complete line; returns an event when the line ends one.
  const handleLine = (line) => {
    if (line === '') return takeEvent();
    if (line.startsWith(':')) return null; // comment / keep-alive
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'data') {
      dataLines.push(value);
    } else {
      fields[name] = value;
    }
    return null;
  };

  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) {
        buffer += decoder.decode(); // flush a trailing partial character
      } else {
        // stream: true keeps a multi-byte character split across reads intact.
        buffer += decoder.decode(value, { stream: true });
      }

      // Emit every complete line in the buffer.
      const lineEnd = /\r\n|\r|\n/g;
      let start = 0;
      let match;
      while ((match = lineEnd.exec(buffer)) !== null) {
        // A CR at the very end may be the first half of a CRLF split across
        // reads: wait for more data before deciding.
        if (!done && match[0] === '\r' && lineEnd.lastIndex === buffer.length) break;
        const ev = handleLine(buffer.slice(start, match.index));
        start = lineEnd.lastIndex;
        if (ev) yield ev;
      }
      buffer = buffer.slice(start);

      if (done) {
        // Deliver a final line / event the server did not terminate.
        if (buffer !== '') handleLine(buffer);
        buffer = '';
        const ev = takeEvent();
        finished = true;
        if (ev) yield ev;
        return;
      }
    }
  } finally {
    if (!finished) {
      // Stopped early: close the connection so the server can free the slot.
      reader.cancel().catch(() => {});
    } else {
      reader.releaseLock();
    }
  }
}

/** Parses an event's JSON data; throws on `{"error": ...}` or `error:` events. */
function parseEventData(ev) {
  if (ev.error !== undefined) {
    throw toError(ev.error);
  }
  const data = JSON.parse(ev.data);
  if (data && typeof data === 'object' && data.error) {
    throw toError(data);
  }
  return data;
}

/**
 * Streams a completion from `POST /completion`.
 *
 * Sends `{...params, prompt, stream: true}` and yields `{data}` for every event,
 * where `data` is the parsed JSON (`data.content` is the new text). The last
 * event has `data.stop === true` and also carries `timings`,
 * `generation_settings`, `stopped_eos`, `tokens_predicted`, etc.; it is yielded
 * like the others and is also the generator's return value.
 *
 * @example
 *   import { llama } from '/completion.js'
 *
 *   const request = llama('Tell me a joke', { n_predict: 800 })
 *   for await (const chunk of request) {
 *     document.write(chunk.data.content)
 *   }
 *
 * @example
 *   // Stopping early:
 *   const controller = new AbortController()
 *   stopButton.onclick = () => controller.abort()
 *   for await (const chunk of llama(prompt, {}, { controller })) { ... }
 *
 * @param {string|Array<string|number>} prompt  prompt text or tokens
 * @param {object} [params]   any /completion option (n_predict, temperature, grammar, json_schema, ...)
 * @param {LlamaConfig} [config]
 * @returns {AsyncGenerator<{data: object}, {data: object}|undefined>}
 * @throws {Error} on HTTP errors and error events (message = server's error.message)
 */
export async function* llama(prompt, params = {}, config = {}) {
  const { response, single } = await openStream('/completion', { ...params, prompt }, config);
  if (single !== undefined) {
    const chunk = { data: single };
    yield chunk;
    return chunk;
  }

  let last;
  for await (const ev of readEventStream(response)) {
    if (ev.data === undefined && ev.error === undefined) continue;
    if (ev.data === '[DONE]') break; // not sent by /completion, but harmless
    const data = parseEventData(ev);
    last = { data };
    yield last;
    if (data && data.stop) {
      // Final event: timings, generation_settings, stop reasons...
      return last;
    }
  }
  return last;
}

/**
 * Calls {@link llama} and returns an EventTarget that reports progress:
 *   - "message"             detail: the event data (`detail.content` is the new text)
 *   - "generation_settings" detail: data.generation_settings (final event)
 *   - "timings"             detail: data.timings (final event)
 *   - "done"                detail: `{content}` — the whole generated text
 *                           (`aborted: true` is added if stopped via the controller)
 *   - "error"               detail: the Error (HTTP error or error event)
 *
 * @example
 *   import { llamaEventTarget } from '/completion.js'
 *
 *   const conn = llamaEventTarget(prompt)
 *   conn.addEventListener('message', (chunk) => {
 *     document.write(chunk.detail.content)
 *   })
 *
 * @param {string|Array<string|number>} prompt
 * @param {object} [params]
 * @param {LlamaConfig} [config]
 * @returns {EventTarget}
 */
export function llamaEventTarget(prompt, params = {}, config = {}) {
  const eventTarget = new EventTarget();
  const emit = (type, detail) => eventTarget.dispatchEvent(new CustomEvent(type, { detail }));
  (async () => {
    let content = '';
    try {
      for await (const chunk of llama(prompt, params, config)) {
        const data = chunk.data;
        if (typeof data.content === 'string') content += data.content;
        emit('message', data);
        if (data.generation_settings) emit('generation_settings', data.generation_settings);
        if (data.timings) emit('timings', data.timings);
      }
      emit('done', { content });
    } catch (error) {
      if (error && error.name === 'AbortError') {
        emit('done', { content, aborted: true });
      } else {
        emit('error', error);
      }
    }
  })();
  return eventTarget;
}

/**
 * Calls {@link llama} and resolves to the whole generated text once the
 * completion has finished (no incremental updates).
 *
 * @example
 *   import { llamaPromise } from '/completion.js'
 *
 *   llamaPromise(prompt).then((content) => {
 *     document.write(content)
 *   })
 *   // or
 *   const content = await llamaPromise(prompt)
 *
 * @param {string|Array<string|number>} prompt
 * @param {object} [params]
 * @param {LlamaConfig} [config]
 * @returns {Promise<string>}
 */
export async function llamaPromise(prompt, params = {}, config = {}) {
  let content = '';
  for await (const chunk of llama(prompt, params, config)) {
    if (typeof chunk.data.content === 'string') content += chunk.data.content;
  }
  return content;
}

/**
 * (deprecated) Callback form kept for compatibility with older front ends:
 * calls `callback(chunk)` for every chunk of `llama(params.prompt, params)`.
 *
 * @param {object} params      /completion options including `prompt`
 * @param {AbortController} [controller]
 * @param {(chunk: {data: object}) => void} callback
 * @param {LlamaConfig} [config]
 */
export async function llamaComplete(params, controller, callback, config = {}) {
  for await (const chunk of llama(params.prompt, params, { ...config, controller })) {
    callback(chunk);
  }
}

/**
 * Streams an OpenAI-compatible chat completion from `POST /v1/chat/completions`.
 *
 * Sends `{...params, messages, stream: true}` and yields each chunk object as
 * sent by the server (OpenAI `chat.completion.chunk`): the new text is
 * `chunk.choices[0].delta.content`. The stream ends at `data: [DONE]`. The
 * final chunk may carry `timings` (llama.cpp extension) and/or `usage`.
 * The generator returns the last chunk received.
 *
 * @example
 *   import { chat } from '/completion.js'
 *
 *   const messages = [
 *     { role: 'system', content: 'You are a helpful assistant.' },
 *     { role: 'user', content: 'Write a limerick about python exceptions' },
 *   ]
 *   for await (const chunk of chat(messages, { temperature: 0.7 })) {
 *     document.write(chunk.choices[0]?.delta?.content ?? '')
 *   }
 *
 * @param {Array<{role: string, content: string}>} messages
 * @param {object} [params]  e.g. temperature, max_tokens, seed, response_format, or llama.cpp options
 * @param {LlamaConfig} [config]
 * @returns {AsyncGenerator<object, object|undefined>}
 * @throws {Error} on HTTP errors and error events
 */
export async function* chat(messages, params = {}, config = {}) {
  const { response, single } = await openStream('/v1/chat/completions', { ...params, messages }, config);
  if (single !== undefined) {
    // present a non-streamed answer as one chunk with a delta
    const chunk = {
      ...single,
      choices: (single.choices || []).map((c) => ({ ...c, delta: c.delta ?? c.message })),
    };
    yield chunk;
    return chunk;
  }

  let last;
  for await (const ev of readEventStream(response)) {
    if (ev.data === undefined && ev.error === undefined) continue;
    if (ev.data !== undefined && ev.data.trim() === '[DONE]') return last;
    last = parseEventData(ev);
    yield last;
  }
  return last;
}

/**
 * Fetches `GET /props`: `default_generation_settings` (model, n_ctx, sampling
 * defaults...), `total_slots`, `assistant_name`, `user_name`.
 *
 * @example
 *   import { llamaModelInfo } from '/completion.js'
 *
 *   const props = await llamaModelInfo()
 *   console.log(props.default_generation_settings.n_ctx)
 *
 * @param {LlamaConfig} [config]
 * @returns {Promise<object>}
 * @throws {Error} on HTTP errors
 */
export async function llamaModelInfo(config = {}) {
  const headers = {};
  if (config.api_key) headers.Authorization = `Bearer ${config.api_key}`;
  const response = await fetch(endpoint(config, '/props'), {
    headers,
    signal: config.controller?.signal,
  });
  if (!response.ok) {
    throw await httpError(response);
  }
  return response.json();
}

