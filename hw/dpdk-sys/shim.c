/* Macros of DPDK's that have no symbol: rte_errno is a per-lcore (thread-local)
 * variable behind a macro, rte_pktmbuf_mtod a pointer computation. */
#include "wrapper.h"

int contiv_rte_errno(void) { return rte_errno; }

void *contiv_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
