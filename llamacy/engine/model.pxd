from third_party.ggml.llama cimport llama_model, llama_vocab, llama_adapter_lora


cdef class Vocab
cdef class LoraAdapter


cdef class Model:
    cdef llama_model * c_model
    cdef readonly str path
    cdef readonly Vocab vocab
    cdef list _loras
    cdef int _check(self) except -1


cdef class Vocab:
    cdef const llama_vocab * c_vocab
    cdef readonly Model model
    cdef readonly int n_vocab
    cdef list _pieces

    @staticmethod
    cdef Vocab _create(Model model)
    cdef int _check(self) except -1
    cdef int _check_token(self, token) except -1


cdef class LoraAdapter:
    cdef llama_adapter_lora * c_adapter
    cdef readonly str path
    cdef readonly float scale
    cdef readonly Model model

    @staticmethod
    cdef LoraAdapter _create(Model model, str path, float scale)
