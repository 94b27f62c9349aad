"""The engine's log lines into Python logging, shared by the callbacks of libllama/ggml
(``model.pyx``) and libmtmd (``multimodal.pyx``): a line below the route's threshold is dropped
in C without the GIL; a continuation line (GGML_LOG_LEVEL_CONT) logs at its predecessor's level."""
from third_party.ggml.ggml cimport (GGML_LOG_LEVEL_CONT, GGML_LOG_LEVEL_DEBUG, GGML_LOG_LEVEL_INFO,
                                    GGML_LOG_LEVEL_WARN)


ctypedef struct LogRoute:
    int threshold      # the lowest ggml level forwarded
    int last_level     # the level of the last line that was not a continuation


cdef inline int route_level(LogRoute * route, int level) noexcept nogil:
    """The level ``level``'s line logs at (a continuation: the line before's)."""
    if level == GGML_LOG_LEVEL_CONT:
        return route.last_level
    route.last_level = level
    return level


cdef inline str log_line(object logger, int level, const char * text):
    """Log ``text`` (trailing whitespace dropped) at the Python level of ggml ``level``; returns
    the line logged ("" for a blank one). Never raises: a callback from C cannot."""
    try:
        msg = (<bytes> text).decode("utf-8", "replace").rstrip()
        if msg:
            logger.log(10 if level == GGML_LOG_LEVEL_DEBUG else 20 if level == GGML_LOG_LEVEL_INFO
                       else 30 if level == GGML_LOG_LEVEL_WARN else 40, "%s", msg)
        return msg
    except BaseException:
        return ""
