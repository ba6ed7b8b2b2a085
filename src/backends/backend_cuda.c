#include "nofrag_backend.h"
nf_status nf_backend_cuda_create(int device, bool peer_access, nf_log_fn log, void *log_user,
                                 nf_backend **backend_out) {
    (void)device; (void)peer_access; (void)log; (void)log_user;
    if (backend_out) *backend_out = NULL;
    return NF_ERR_UNSUPPORTED;
}
nf_status nf_cuda_mem_info(int device, uint64_t *free_out, uint64_t *total_out) {
    (void)device; (void)free_out; (void)total_out;
    return NF_ERR_UNSUPPORTED;
}
