/*
 * NetStorm's C shim over DPDK: DPDK's fast path (rx/tx burst, mbuf alloc/free, mtod, ring
 * enqueue/dequeue) consists of `static inline` functions in headers, which Rust cannot call.
 * Each is wrapped here as a real symbol named `ns_*`, together with the few non-inline calls
 * NetStorm needs, so the Rust side declares only `ns_*` functions with plain C types.
 *
 * Nothing here allocates or locks except the control-path calls (EAL init, pool create,
 * device configure/start/stop).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_prefetch.h>
#include <rte_ring.h>
#include <rte_version.h>

/* ---- EAL ---------------------------------------------------------------------------- */

int ns_eal_init(int argc, char **argv) { return rte_eal_init(argc, argv); }
int ns_eal_cleanup(void) { return rte_eal_cleanup(); }
int ns_errno(void) { return rte_errno; }
const char *ns_strerror(int errnum) { return rte_strerror(errnum); }
const char *ns_version(void) { return rte_version(); }
int ns_socket_id(void) { return (int)rte_socket_id(); }

/* ---- mempool / mbuf ------------------------------------------------------------------- */

struct rte_mempool *ns_pktmbuf_pool_create(const char *name, unsigned n, unsigned cache_size,
                                           uint16_t data_room_size, int socket_id) {
    return rte_pktmbuf_pool_create(name, n, cache_size, 0, data_room_size, socket_id);
}
void ns_mempool_free(struct rte_mempool *mp) { rte_mempool_free(mp); }
unsigned ns_mempool_avail_count(const struct rte_mempool *mp) {
    return rte_mempool_avail_count(mp);
}
struct rte_mbuf *ns_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int ns_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count) {
    return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}
void ns_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void ns_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count) {
    rte_pktmbuf_free_bulk(mbufs, count);
}
uint8_t *ns_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, uint8_t *); }
uint16_t ns_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint32_t ns_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t ns_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
uint16_t ns_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint8_t *ns_pktmbuf_append(struct rte_mbuf *m, uint16_t len) {
    return (uint8_t *)rte_pktmbuf_append(m, len);
}

/* ---- ethdev ------------------------------------------------------------------------- */

uint16_t ns_eth_dev_count_avail(void) { return rte_eth_dev_count_avail(); }
int ns_eth_dev_get_port_by_name(const char *name, uint16_t *port_id) {
    return rte_eth_dev_get_port_by_name(name, port_id);
}
/* Writes the ethdev's name (NUL-terminated) into name[0..len). */
int ns_eth_dev_get_name_by_port(uint16_t port_id, char *name, unsigned len) {
    char buf[RTE_ETH_NAME_MAX_LEN];
    int ret = rte_eth_dev_get_name_by_port(port_id, buf);
    if (ret == 0) {
        if (len == 0)
            return -EINVAL;
        strncpy(name, buf, len - 1);
        name[len - 1] = 0;
    }
    return ret;
}
int ns_eth_dev_is_valid_port(uint16_t port_id) { return rte_eth_dev_is_valid_port(port_id); }
int ns_eth_dev_socket_id(uint16_t port_id) { return rte_eth_dev_socket_id(port_id); }

/* Plain configuration: no RSS, no offloads (NetStorm computes its own checksums). */
int ns_eth_dev_configure(uint16_t port_id, uint16_t nb_rx_q, uint16_t nb_tx_q) {
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof(conf));
    return rte_eth_dev_configure(port_id, nb_rx_q, nb_tx_q, &conf);
}
int ns_eth_dev_set_mtu(uint16_t port_id, uint16_t mtu) { return rte_eth_dev_set_mtu(port_id, mtu); }
int ns_eth_rx_queue_setup(uint16_t port_id, uint16_t queue, uint16_t nb_desc, int socket_id,
                          struct rte_mempool *mp) {
    return rte_eth_rx_queue_setup(port_id, queue, nb_desc,
                                  (unsigned)(socket_id < 0 ? SOCKET_ID_ANY : socket_id), NULL, mp);
}
int ns_eth_tx_queue_setup(uint16_t port_id, uint16_t queue, uint16_t nb_desc, int socket_id) {
    return rte_eth_tx_queue_setup(port_id, queue, nb_desc,
                                  (unsigned)(socket_id < 0 ? SOCKET_ID_ANY : socket_id), NULL);
}
int ns_eth_dev_start(uint16_t port_id) { return rte_eth_dev_start(port_id); }
int ns_eth_dev_stop(uint16_t port_id) { return rte_eth_dev_stop(port_id); }
int ns_eth_dev_close(uint16_t port_id) { return rte_eth_dev_close(port_id); }
int ns_eth_promiscuous_enable(uint16_t port_id) { return rte_eth_promiscuous_enable(port_id); }
/* Link status without waiting: 1 up, 0 down, a negative errno on error. */
int ns_eth_link_up(uint16_t port_id) {
    struct rte_eth_link link;
    memset(&link, 0, sizeof(link));
    int ret = rte_eth_link_get_nowait(port_id, &link);
    return ret < 0 ? ret : link.link_status == RTE_ETH_LINK_UP;
}
int ns_eth_macaddr_get(uint16_t port_id, uint8_t mac[6]) {
    struct rte_ether_addr a;
    int ret = rte_eth_macaddr_get(port_id, &a);
    if (ret == 0)
        memcpy(mac, a.addr_bytes, 6);
    return ret;
}
int ns_eth_stats_get(uint16_t port_id, uint64_t out[6]) {
    struct rte_eth_stats s;
    int ret = rte_eth_stats_get(port_id, &s);
    if (ret == 0) {
        out[0] = s.ipackets;
        out[1] = s.opackets;
        out[2] = s.ibytes;
        out[3] = s.obytes;
        out[4] = s.imissed;
        out[5] = s.oerrors;
    }
    return ret;
}
uint16_t ns_eth_rx_burst(uint16_t port_id, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port_id, queue, pkts, n);
}
uint16_t ns_eth_tx_burst(uint16_t port_id, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port_id, queue, pkts, n);
}

/*
 * Burst helpers: one FFI call per burst instead of three per packet.
 * ns_eth_rx_burst_views: rte_eth_rx_burst, then for each mbuf its first segment's data pointer
 * (NULL when the mbuf is chained: nb_segs != 1) and data length.
 */
uint16_t ns_eth_rx_burst_views(uint16_t port_id, uint16_t queue, struct rte_mbuf **pkts, uint16_t n,
                               uint8_t **data, uint16_t *len) {
    uint16_t k = rte_eth_rx_burst(port_id, queue, pkts, n);
    for (uint16_t i = 0; i < k; i++) {
        struct rte_mbuf *m = pkts[i];
        if (i + 1 < k)
            rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void *));
        data[i] = m->nb_segs == 1 ? rte_pktmbuf_mtod(m, uint8_t *) : NULL;
        len[i] = rte_pktmbuf_data_len(m);
    }
    return k;
}
/*
 * ns_pktmbuf_alloc_bulk_append: allocates n mbufs and appends len[i] bytes to mbuf i,
 * writing the start of those bytes to data[i]. 0 on success; a negative errno and nothing
 * allocated otherwise (-ENOBUFS: pool empty; -ENOSPC: an mbuf has too little tailroom).
 */
int ns_pktmbuf_alloc_bulk_append(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n,
                                 const uint16_t *len, uint8_t **data) {
    int ret = rte_pktmbuf_alloc_bulk(mp, mbufs, n);
    if (ret != 0)
        return -ENOBUFS;
    for (unsigned i = 0; i < n; i++) {
        data[i] = (uint8_t *)rte_pktmbuf_append(mbufs[i], len[i]);
        if (data[i] == NULL) {
            rte_pktmbuf_free_bulk(mbufs, n);
            return -ENOSPC;
        }
    }
    return 0;
}
/* Sets the length of a single-segment mbuf (data_len = pkt_len = len; len <= what was appended). */
void ns_pktmbuf_set_len(struct rte_mbuf *m, uint16_t len) {
    m->data_len = len;
    m->pkt_len = len;
}
/* rte_thread_register: gives a non-EAL thread an lcore id (so mempool caches work). */
int ns_thread_register(void) { return rte_thread_register() == 0 ? 0 : -rte_errno; }
/* rte_thread_unregister: releases the calling thread's lcore id (before it exits). */
void ns_thread_unregister(void) { rte_thread_unregister(); }

/* ---- rings (test fabrics: ethdevs made of rings, a software switch between them) ------- */

struct rte_ring *ns_ring_create(const char *name, unsigned count, int socket_id, unsigned flags) {
    return rte_ring_create(name, count, socket_id, flags);
}
void ns_ring_free(struct rte_ring *r) { rte_ring_free(r); }
unsigned ns_ring_enqueue_burst(struct rte_ring *r, void **objs, unsigned n) {
    return rte_ring_enqueue_burst(r, objs, n, NULL);
}
unsigned ns_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n) {
    return rte_ring_dequeue_burst(r, objs, n, NULL);
}
unsigned ns_ring_flag_sp_enq(void) { return RING_F_SP_ENQ; }
unsigned ns_ring_flag_sc_deq(void) { return RING_F_SC_DEQ; }

/*
 * rte_eth_from_rings() lives in the net_ring PMD. With a shared DPDK build the EAL loads that
 * PMD from its plugin directory; linking it a second time from the library directory would
 * register the driver twice. So look the function up in the copy the EAL already loaded
 * (RTLD_NOLOAD), falling back to the default namespace (static builds).
 * Returns the new port id, or a negative errno.
 */
typedef int (*from_rings_fn)(const char *, struct rte_ring *const[], unsigned,
                             struct rte_ring *const[], unsigned, unsigned);
int ns_eth_from_rings(const char *name, struct rte_ring *const rx[], unsigned nb_rx,
                      struct rte_ring *const tx[], unsigned nb_tx, unsigned numa_node) {
    from_rings_fn f = NULL;
#ifdef RTE_EAL_PMD_PATH
    static const char *const candidates[] = {
        RTE_EAL_PMD_PATH "/librte_net_ring.so",
        RTE_EAL_PMD_PATH "/librte_net_ring.so.23",
        RTE_EAL_PMD_PATH "/librte_net_ring.so.24",
        RTE_EAL_PMD_PATH "/librte_net_ring.so.25",
    };
    for (unsigned i = 0; i < sizeof(candidates) / sizeof(candidates[0]) && f == NULL; i++) {
        void *h = dlopen(candidates[i], RTLD_NOW | RTLD_NOLOAD);
        if (h != NULL)
            f = (from_rings_fn)dlsym(h, "rte_eth_from_rings");
    }
#endif
    if (f == NULL)
        f = (from_rings_fn)dlsym(RTLD_DEFAULT, "rte_eth_from_rings");
    if (f == NULL)
        return -ENOTSUP;
    int ret = f(name, rx, nb_rx, tx, nb_tx, numa_node);
    return ret < 0 ? -(rte_errno ? rte_errno : EINVAL) : ret;
}
