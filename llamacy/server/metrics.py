"""GET /metrics: the spec's Prometheus metrics (``--metrics``), plus HTTP request latency.

The ``llamacpp:*`` values are read from the scheduler when scraped and written as llama.cpp
writes them (``# TYPE llamacpp:prompt_tokens_total counter``): the spec's eight names, and
today's llama-server's additions (cached prompt tokens, decode steps, busy slots per step, …).
llamacy's own families go through a per-server ``CollectorRegistry`` (no prometheus-client
globals): request latency, a histogram fed by ``Metrics.observe`` when a request finishes.
The response carries ``Process-Start-Time-Unix`` as today's llama-server does.
"""
from __future__ import annotations

import bisect
import re

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from llamacy.errors import NotSupportedError
from llamacy.server.base import BaseHandler

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
MAX_LABEL_SETS = 256     # distinct (path, status) pairs kept; later new ones are folded into path="other"
_NUMERIC_SEGMENT = re.compile(r"/\d+(?=/|$)")


def _route_label(path: str) -> str:
    """A bounded label for a request path: numeric segments (``/slots/0``) become ``{id}``."""
    return _NUMERIC_SEGMENT.sub("/{id}", path)[:100]


class _Latency:
    """Cumulative histogram counts per (path, status)."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], list] = {}   # key → [bucket counts..., +Inf count, sum]

    def observe(self, path: str, status: str, seconds: float) -> None:
        key = (path, status)
        row = self.series.get(key)
        if row is None:
            if len(self.series) >= MAX_LABEL_SETS:
                key = ("other", status)
                row = self.series.get(key)
            if row is None:
                row = self.series[key] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]
        row[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        row[-1] += seconds

    def family(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily("llamacy:http_request_duration_seconds",
                                    "HTTP request latency in seconds, by endpoint path and status.",
                                    labels=["path", "status"])
        for (path, status), row in sorted(self.series.items()):
            buckets, total = [], 0
            for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), row[:-1]):
                total += n
                buckets.append((bound, total))
            fam.add_metric([path, status], buckets, sum_value=row[-1])
        return fam


def _number(value: float) -> str:
    """A sample value as Prometheus text writes it (integers without a fraction)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def engine_families(stats, *, kv_tokens: int, n_ctx: int, n_processing: int, n_deferred: int) -> list:
    """The ``llamacpp:*`` families, in llama.cpp's order: (name, type, help, value). The spec's
    eight names keep the spec's help text; today's llama-server adds the others."""
    n_prompt = stats.n_prompt_tokens_processed_total if stats else 0
    t_prompt = stats.t_prompt_processing_total if stats else 0.0
    n_gen = stats.n_tokens_predicted_total if stats else 0
    t_gen = stats.t_tokens_generation_total if stats else 0.0
    n_decode = stats.n_decode_total if stats else 0
    return [
        ("prompt_tokens_total", "counter", "Number of prompt tokens processed.", n_prompt),
        ("prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the cache.",
         stats.n_prompt_tokens_cached_total if stats else 0),
        ("prompt_seconds_total", "counter", "Total time spent processing prompts.", t_prompt),
        ("tokens_predicted_total", "counter", "Number of generation tokens processed.", n_gen),
        ("tokens_predicted_seconds_total", "counter", "Total time spent generating tokens.", t_gen),
        ("n_decode_total", "counter", "Total number of decode steps (batches given to the engine).", n_decode),
        ("n_tokens_max", "counter", "Largest observed sequence length (prompt + generation).",
         stats.n_tokens_max if stats else 0),
        # llamacy has no speculative decoding: these stay 0 (named so dashboards built for
        # today's llama-server find them)
        ("spec_decode_num_draft_tokens_total", "counter", "Speculative: Total draft tokens generated.", 0),
        ("spec_decode_num_accepted_tokens_total", "counter",
         "Speculative: Total draft tokens accepted by the target model.", 0),
        ("spec_decode_num_drafts_total", "counter", "Speculative: Total speculative decoding verification steps.", 0),
        ("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.",
         n_prompt / t_prompt if t_prompt > 0 else 0.0),
        ("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.",
         n_gen / t_gen if t_gen > 0 else 0.0),
        ("kv_cache_usage_ratio", "gauge", "KV-cache usage. 1 means 100 percent usage.",
         kv_tokens / n_ctx if n_ctx else 0.0),
        ("kv_cache_tokens", "gauge", "KV-cache tokens.", kv_tokens),
        ("requests_processing", "gauge", "Number of requests processing.", n_processing),
        ("requests_deferred", "gauge", "Number of requests deferred.", n_deferred),
        ("n_busy_slots_per_decode", "gauge", "Average number of busy slots per decode step.",
         (stats.n_busy_slots_total / max(n_decode, 1)) if stats else 0.0),
    ]


class Metrics:
    """The metrics of one server: the spec's engine counters and gauges, and request latency."""

    def __init__(self, state) -> None:
        self.state = state
        self.latency = _Latency()
        self.rejections: dict[str, int] = {}   # reason → requests answered with an error
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def observe(self, handler) -> None:
        """Record a finished request (called when a handler finishes)."""
        self.latency.observe(_route_label(handler.request.path), str(handler.get_status()),
                             handler.request.request_time())

    def rejected(self, reason: str) -> None:
        """Count a request answered with an error (reasons are a small fixed set of labels)."""
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    def render(self) -> bytes:
        """The ``llamacpp:*`` families written as llama.cpp writes them (prometheus-client would
        rename a counter without ``_total``, such as ``n_tokens_max``), then llamacy's own."""
        st = self.state
        sch = st.scheduler
        families = engine_families(getattr(sch, "stats", None), kv_tokens=sch.kv_tokens() if sch is not None else 0,
                                   n_ctx=st.ctx.n_ctx if st.ctx is not None else 0,
                                   n_processing=sch.n_processing if sch is not None else 0,
                                   n_deferred=sch.n_deferred if sch is not None else 0)
        lines = []
        for name, kind, help_text, value in families:
            lines += [f"# HELP llamacpp:{name} {help_text}", f"# TYPE llamacpp:{name} {kind}",
                      f"llamacpp:{name} {_number(value)}"]
        return ("\n".join(lines) + "\n").encode() + generate_latest(self.registry)

    def collect(self):
        """The collector protocol: llamacy's own families (request latency, rejections, failures)."""
        st = self.state
        sch = st.scheduler
        stats = getattr(sch, "stats", None)
        yield self.latency.family()
        yield GaugeMetricFamily("llamacy:http_requests_in_flight",
                                "HTTP requests whose handler has not finished.", value=st.in_flight)
        rejected = CounterMetricFamily("llamacy:requests_rejected", "Requests answered with an error, by reason.",
                                       labels=["reason"])
        for reason, n in sorted(self.rejections.items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield CounterMetricFamily("llamacy:failed_steps", "Engine steps that failed (their requests got an error).",
                                  value=stats.n_failed_steps_total if stats else 0)
        if sch is not None:
            yield from _loop_families(sch.loop_counters())


def _loop_families(c: dict):
    """Where the engine thread's time goes: a step loop that waits for the IOLoop (``wait``)
    or spends its run outside decode and sampling is held back by the host, not the device."""
    yield CounterMetricFamily("llamacy:engine_steps", "Decode steps of the generation loop.", value=c["steps"])
    yield CounterMetricFamily("llamacy:engine_batch_tokens", "Tokens in the generation loop's batches.",
                              value=c["tokens"])
    yield CounterMetricFamily("llamacy:engine_runs", "Runs of the generation loop (each pause for the IOLoop ends one).",
                              value=c["runs"])
    yield CounterMetricFamily("llamacy:engine_pad_tokens", "Throw-away tokens of idle slots that kept a batch "
                              "one micro-batch (GPU).", value=c["pad_tokens"])
    yield CounterMetricFamily("llamacy:engine_outputs", "Outputs sampled by the generation loop.",
                              value=c["outputs"])
    yield CounterMetricFamily("llamacy:engine_device_outputs", "Outputs sampled on the device: from candidates "
                              "selected there, or a greedy argmax taken there (--backend-sampling).",
                              value=c["device_outputs"])
    yield CounterMetricFamily("llamacy:engine_device_greedy_outputs", "Of those, greedy outputs whose argmax "
                              "was taken on the device.", value=c["device_greedy_outputs"])
    yield CounterMetricFamily("llamacy:engine_device_one_copy_outputs", "Of the device outputs, those whose step's "
                              "results (of their kind) came back from the device in one copy rather than one per "
                              "output.", value=c["device_one_copy_outputs"])
    yield CounterMetricFamily("llamacy:engine_device_switches", "Slots switched between device candidates and "
                              "whole logits rows (each re-plans the decode graph).", value=c["device_switches"])
    yield CounterMetricFamily("llamacy:engine_graphs_reused", "Decode graphs the engine reused instead of "
                              "rebuilding (the batch kept its shape).", value=c["graphs_reused"])
    seconds = CounterMetricFamily("llamacy:engine_seconds", "Seconds of the engine thread in the generation loop, "
                                  "by part: run (all of it), decode (llama_decode), sync (waiting for the device), "
                                  "sample, wait (for the IOLoop to take results).", labels=["part"])
    for part in ("run", "decode", "sync", "sample", "wait"):
        seconds.add_metric([part], c[f"{part}_seconds"])
    yield seconds
    yield CounterMetricFamily("llamacy:publish_seconds", "Seconds the IOLoop spent turning steps into events.",
                              value=c["publish_seconds"])


class MetricsHandler(BaseHandler):
    counts_in_flight = False   # a scrape does not count itself
    def get(self) -> None:
        st = self.state
        if not st.config.metrics:
            raise NotSupportedError("This server does not support metrics endpoint.")
        st.require_ready()
        if st.metrics is None:   # normally created at start-up, so latency counts from the first request
            st.metrics = Metrics(st)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Process-Start-Time-Unix", str(int(st.started_at)))
        self.finish(st.metrics.render())


ROUTES = [(r"/metrics", MetricsHandler)]
