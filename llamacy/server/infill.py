"""POST /infill: code infilling with the vocab's FIM tokens and /completion's options."""
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


class InfillHandler(CompletionHandler):
    multi_prompt = False    # 'prompt' is extra text after the middle token
    def parse(self, body: dict, add_bos: bool):
        st = self.state
        prefix = get_str(body, "input_prefix", "")
        suffix = get_str(body, "input_suffix", "")
        extra = get_str(body, "prompt", "")
        # images ([img-N] markers with image_data) go in the text after the FIM middle token
        with_images = tokenize_with_images(st.vision, body, extra, add_bos=False)
        tokens = infill_tokens(st.model.vocab, prefix, suffix, spm=st.config.spm_infill, add_bos=add_bos,
                               extra="" if with_images else extra)
        params = parse_completion({**body, "prompt": tokens, "image_data": None}, st.model.vocab, add_bos=False,
                                  grammar_from_schema=st.grammar_from_schema, sampling_defaults=st.sampling_defaults)
        if with_images:
            extra_tokens, media = with_images
            params.prompt_tokens = tokens + extra_tokens
            params.media = media.shifted(len(tokens))
        params.prompt = extra
        return params


ROUTES = [(r"/infill", InfillHandler)]
