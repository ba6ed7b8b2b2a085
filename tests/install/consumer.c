/* What a C engine linking an installed nofrag does first: a pool on the host backend (real
 * memory), blocks written and read back, the invariants checked. Prints "consumer: ok <version>"
 * and exits 0, or names what failed and exits 1. */
#include <stdio.h>
#include <string.h>

#include "nofrag.h"
#include "nofrag_backend.h"

#define MUST(call)                                                           \
    do {                                                                     \
        nf_status s_ = (call);                                               \
        if (s_ != NF_OK) {                                                   \
            fprintf(stderr, "consumer: %s: %s\n", #call, nf_status_str(s_)); \
            return 1;                                                        \
        }                                                                    \
    } while (0)

int main(void) {
    nf_backend *backend;
    MUST(nf_backend_host_create(true, 0, &backend));
    nf_config cfg = nf_config_default();
    cfg.capacity = 8u << 20;
    cfg.virtual_bytes = 64u << 20;
    nf_pool *pool;
    MUST(nf_pool_create(&cfg, backend, &pool));
    void *blocks[8];
    for (int i = 0; i < 8; i++) {
        MUST(nf_alloc(pool, 512u << 10, NULL, &blocks[i]));
        memset(blocks[i], i + 1, 512u << 10);
    }
    for (int i = 0; i < 8; i++) {
        const unsigned char *bytes = blocks[i];
        if (bytes[0] != i + 1 || bytes[(512u << 10) - 1] != i + 1) {
            fprintf(stderr, "consumer: block %d lost its bytes\n", i);
            return 1;
        }
        MUST(nf_free(pool, blocks[i], NULL));
    }
    MUST(nf_pool_check(pool));
    MUST(nf_pool_destroy(pool));
    nf_backend_destroy(backend);
    printf("consumer: ok %s\n", nf_version());
    return 0;
}
