"""Reranking: POST /rerank (and /reranking, /v1/rerank, /v1/reranking) with --reranking.

Each (query, document) pair is one input of the embedding queue, on the embedding context with
rank pooling, whose pooled output is the classifier's scores: the first one is the relevance.
"""
from __future__ import annotations

from llamacy.api.rerank import parse_rerank, rerank_prompt, rerank_response
from llamacy.errors import InvalidRequestError, NotSupportedError
from llamacy.server.embeddings import _EmbeddingHandler


class RerankHandler(_EmbeddingHandler):
    async def post(self) -> None:
        st = self.state
        st.require_ready()
        if st.embed_ctx is None or st.embed_ctx.pooling != "rank":
            raise NotSupportedError("This server does not support reranking. Start it with `--reranking`")
        body = await self.off_loop(self.json_body)
        req = parse_rerank(body, st.config.max_embedding_inputs)
        results = await self.embed_tokens(await self.off_loop(self.prompts, req.query, req.documents))
        if not results:
            return   # cancelled: the client is gone
        scores = [float(r.embedding[0]) for r in results]
        self.write_json(rerank_response(req, scores, sum(r.n_tokens for r in results), model=st.model_name))

    def prompts(self, query: str, documents: list[str]) -> list[list[int]]:
        """One prompt per document; each must fit in one ubatch of the embedding context."""
        st = self.state
        vocab, limit = st.model.vocab, st.embed_ctx.n_ubatch
        template = st.model.chat_template("rerank")
        query_tokens = vocab.tokenize(query, add_special=False, parse_special=template is not None)
        if len(query_tokens) > limit:
            raise InvalidRequestError(f"'query' has {len(query_tokens)} tokens, more than the physical batch "
                                      f"size ({limit}); raise --ubatch-size")
        out = []
        for i, doc in enumerate(documents):
            tokens = rerank_prompt(vocab, template, query, doc, query_tokens=query_tokens)
            if len(tokens) > limit:
                raise InvalidRequestError(f"document {i}: the query and document take {len(tokens)} tokens, more "
                                          f"than the physical batch size ({limit}); raise --ubatch-size")
            out.append(tokens)
        return out


ROUTES = [
    (r"/rerank", RerankHandler),
    (r"/reranking", RerankHandler),
    (r"/v1/rerank", RerankHandler),
    (r"/v1/reranking", RerankHandler),
]
