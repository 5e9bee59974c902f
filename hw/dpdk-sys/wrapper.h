/* The DPDK headers the bindings cover. */
#include <stdio.h>
#include <rte_config.h>
#include <rte_log.h>
#include <rte_version.h>
#include <rte_errno.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_dev.h>
#include <rte_bus_vdev.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <rte_eth_ring.h>

/* Macros that bindgen cannot turn into functions (shim.c). */
int contiv_rte_errno(void);
void *contiv_pktmbuf_mtod(struct rte_mbuf *m);
