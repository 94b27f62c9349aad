"""POST /infill: code infilling with the vocab's FIM tokens and /completion's options.

``input_extra`` (today's llama-server) adds context from other files, as
``[{"filename": string, "text": string}, ...]``: each chunk goes before the FIM prefix, marked with
the vocab's FIM_SEP token and its file name (a repository-level prompt, with FIM_REP and a
project name first) — or, for a vocab without those tokens, after a plain-text separator."""
from __future__ import annotations

from llamacy.api.completion import parse_completion
from llamacy.api.fields import get_str
from llamacy.api.images import tokenize_with_images
from llamacy.errors import InvalidRequestError
from llamacy.server.completion import CompletionHandler


def infill_tokens(vocab, prefix: str, suffix: str, *, spm: bool, add_bos: bool, extra: str = "") -> list[int]:
    """[BOS] FIM_PRE prefix FIM_SUF suffix FIM_MID [extra]  (SPM order: FIM_SUF suffix FIM_PRE prefix)."""
    pre, suf, mid = vocab.fim_pre, vocab.fim_suf, vocab.fim_mid
    if min(pre, suf, mid) < 0:
        raise InvalidRequestError("this model does not support infill: it has no FIM prefix/suffix/middle tokens")
    p = [pre] + vocab.tokenize(prefix, add_special=False, parse_special=False)
    s = [suf] + vocab.tokenize(suffix, add_special=False, parse_special=False)
    tokens = (s + p) if spm else (p + s)
    if add_bos and vocab.add_bos and vocab.bos >= 0:
        tokens.insert(0, vocab.bos)
    tokens.append(mid)
    if extra:
        tokens += vocab.tokenize(extra, add_special=False, parse_special=True)
    return tokens


MAX_EXTRA_CHUNKS = 256
_CHUNK_SEPARATOR = "\n\n--- snippet ---\n\n"


def parse_input_extra(body: dict) -> list[tuple[str, str]]:
    """``input_extra`` → [(filename, text)]; a clear 400 for any other shape."""
    raw = body.get("input_extra")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequestError('\'input_extra\' must be an array of {"filename": string, "text": string}')
    if len(raw) > MAX_EXTRA_CHUNKS:
        raise InvalidRequestError(f"'input_extra' has more than {MAX_EXTRA_CHUNKS} chunks")
    chunks = []
    for i, chunk in enumerate(raw):
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise InvalidRequestError(f"input_extra[{i}] must contain a 'text' field with a string value")
        filename = chunk.get("filename", "tmp")
        if not isinstance(filename, str):
            raise InvalidRequestError(f"input_extra[{i}].filename must be a string")
        chunks.append((filename, chunk["text"]))
    return chunks


def extra_context_tokens(vocab, chunks: list[tuple[str, str]]) -> list[int]:
    """The tokens of ``input_extra`` that go before the FIM prefix."""
    rep, sep = vocab.fim_rep, vocab.fim_sep
    out: list[int] = []
    if rep >= 0:
        out += [rep] + vocab.tokenize("myproject\n", add_special=False, parse_special=False)
    for filename, text in chunks:
        if sep >= 0:
            out += [sep] + vocab.tokenize(filename + "\n", add_special=False, parse_special=False)
        else:
            out += vocab.tokenize(_CHUNK_SEPARATOR, add_special=False, parse_special=False)
        out += vocab.tokenize(text, add_special=False, parse_special=False)
    if sep >= 0 and chunks:
        out += [sep] + vocab.tokenize("filename\n", add_special=False, parse_special=False)
    return out


class InfillHandler(CompletionHandler):
    multi_prompt = False    # 'prompt' is extra text after the middle token
    def parse(self, body: dict, add_bos: bool):
        st = self.state
        prefix = get_str(body, "input_prefix", "")
        suffix = get_str(body, "input_suffix", "")
        extra = get_str(body, "prompt", "")
        # images ([img-N] markers with image_data) go in the text after the FIM middle token
        with_images = tokenize_with_images(st.vision, body, extra, add_bos=False)
        chunks = parse_input_extra(body)
        tokens = infill_tokens(st.model.vocab, prefix, suffix, spm=st.config.spm_infill, add_bos=add_bos,
                               extra="" if with_images else extra)
        params = parse_completion({**body, "prompt": tokens, "image_data": None, "input_extra": None},
                                  st.model.vocab, add_bos=False, grammar_from_schema=st.grammar_from_schema,
                                  sampling_defaults=st.sampling_defaults)
        if chunks:
            # the most recent context that leaves room for the FIM prompt and the answer
            context = extra_context_tokens(st.model.vocab, chunks)
            n_ctx = st.scheduler.n_ctx_slot
            room = n_ctx - len(tokens) - (params.n_predict if params.n_predict > 0 else n_ctx // 4)
            context = context[len(context) - room:] if room > 0 else []
            at = 1 if tokens and add_bos and tokens[0] == st.model.vocab.bos else 0
            tokens[at:at] = context
            params.prompt_tokens = tokens
        if with_images:
            extra_tokens, media = with_images
            params.prompt_tokens = tokens + extra_tokens
            params.media = media.shifted(len(tokens))
        params.prompt = extra
        return params


ROUTES = [(r"/infill", InfillHandler)]
