// SPDX-License-Identifier: GPL-2.0-only
/*
 * Network sensor: which addresses a session's processes may reach, decided in the kernel.
 *
 * Hooks: cgroup sock_addr programs at the cgroup v2 root (multi-attach links, so they coexist with
 * others): connect4/6 (TCP connect, TCP fast open, connected UDP, io_uring connect: all pass through
 * the protocol's pre_connect), sendmsg4/6 (unconnected UDP datagrams), recvmsg4/6 (DNS replies get the
 * server address the caller asked back), and connect_unix where the kernel and loader offer it. A unix
 * socket reached under another name than the one a rule denies is caught after the connect, by identity
 * (sys_exit_connect, and io_uring_complete for io_uring's connects).
 * sock_create refuses inet sockets no hook above decides (raw, ICMP, UDP-Lite, ...); sockets of other
 * families (packet, vsock, ...) are caught where they are asked for, socket(2) or an io_uring request.
 *
 * They run in the caller's context, so the session is found the way the process sensor finds it: the
 * shared `tags` map by tgid, checked against the task's start time. Untagged callers cost one hash miss.
 *
 * Decision: deny trie, then allow trie, then the addresses the session's own DNS answers gave (host:
 * rules), then the policy default. Each trie is an LPM trie over {generation, family, address}; its entry
 * names a port set, itself an LPM trie over {set, protocol, port} where ranges are stored as aligned
 * blocks. Lookups are bounded by key width, not by the number of rules.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "bridle_net.h"
#include "tags.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define DNS_PORT 53
#define RECENT_NS 1000000000ULL /* allowed datagrams to one destination: one event per second */
#define BIND_TRIES 4

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, u32);
	__type(value, struct bridle_net_cfg);
} net_policies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct bridle_net_conf);
} net_conf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bridle_net_key);
	__type(value, struct bridle_net_node);
} net_deny SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bridle_net_key);
	__type(value, struct bridle_net_node);
} net_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bridle_port_key);
	__type(value, u32);
} net_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bridle_host_key);
	__type(value, struct bridle_net_node);
} net_hosts SEC(".maps");

/* Filled by bridle's resolver before it hands an answer to the session. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct bridle_dnsaddr_key);
	__type(value, struct bridle_dnsaddr);
} dns_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, struct bridle_dns_client);
} dns_clients SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bridle_unix_key);
	__type(value, struct bridle_rule);
} unix_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bridle_unix_ino_key);
	__type(value, struct bridle_rule);
} unix_inodes SEC(".maps");

/*
 * connect() calls of sessions with inode rules in flight: thread → the descriptor it was given, and the
 * socket the connect_unix hook saw being connected (what the check at exit reads, where the kernel has
 * the hook: the descriptor table can change meanwhile). Not an LRU: an entry pushed out would skip a check,
 * so a connect that finds no room is refused instead.
 */
struct unix_pending_val {
	s64 fd;
	u64 sk;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144); /* more than the threads this kind of host can run at once */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, u64);
	__type(value, struct unix_pending_val);
} unix_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct bridle_net_recent);
	__type(value, u64);
} net_recent SEC(".maps");

/*
 * The loader makes this the process sensor's `events` ring buffer (reuseMap): connects, execs and
 * session ends of a session reach the consumer in the order they were committed.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} net_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u64);
} net_lost SEC(".maps");

/* Names the ring-buffer records in this object's BTF for the layout test. */
struct bridle_net_btf_anchor {
	struct bridle_net_ev net;
	struct bridle_unix_ev unix_ev;
	struct bridle_unix_key unix_key;
	struct bridle_unix_ino_key unix_ino_key;
	struct bridle_host_key host_key;
	struct bridle_net_recent recent;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct bridle_net_btf_anchor);
} net_btf_anchor SEC(".maps");

/* The caller's tag, or NULL when untagged (a stale entry of a previous owner of the pid is dropped). */
static __always_inline struct bridle_tag *caller_tag(u32 tgid)
{
	return tag_of(tgid, bpf_get_current_task_btf());
}

static __always_inline u64 caller_key(u32 tgid)
{
	return proc_key(tgid, bpf_get_current_task_btf());
}

/* The network settings of the session's policy, or NULL when its policy has no network section. */
static __always_inline struct bridle_net_cfg *net_policy(struct bridle_tag *tag)
{
	u32 pid = tag->policy;
	return bpf_map_lookup_elem(&net_policies, &pid);
}

/* Monitor mode, by the session's tag or by its network policy: decide and report, refuse nothing. */
static __always_inline bool net_monitor(struct bridle_tag *tag, struct bridle_net_cfg *cfg)
{
	return (tag->flags & BRIDLE_TAG_MONITOR) || (cfg->flags & BRIDLE_NET_F_MONITOR);
}

/* What a decision is reported as: a deny in monitor mode is would_deny. */
static __always_inline u32 net_verdict(u32 action, bool monitor)
{
	return action == BRIDLE_DENY && monitor ? BRIDLE_WOULD_DENY : action;
}

static __always_inline void count_loss(u32 i)
{
	u64 *n = bpf_map_lookup_elem(&net_lost, &i);
	if (n)
		__sync_fetch_and_add(n, 1);
}

/* A destination, normalized for lookups. */
struct dest {
	struct bridle_net_key k; /* prefixlen = full, gen, family, addr */
	u8 given[16];            /* as the caller wrote it */
	u16 port;                /* host order */
	u16 proto;               /* 6, 17, or 0 for any other */
	u8 sock_family;          /* 4 or 6 */
	u8 flags;                /* BRIDLE_NEV_* */
};

/* The key `d` is judged by: IPv4 address `a` (network order). */
static __always_inline void dest_key4(struct dest *d, u32 a)
{
	d->k.family = 4;
	__builtin_memcpy(d->k.addr, &a, 4);
	d->k.prefixlen = 64 + 32;
}

/* The key `d` is judged by: IPv6 address w0..w3 (network order). */
static __always_inline void dest_key6(struct dest *d, u32 w0, u32 w1, u32 w2, u32 w3)
{
	d->k.family = 6;
	__builtin_memcpy(d->k.addr, &w0, 4);
	__builtin_memcpy(d->k.addr + 4, &w1, 4);
	__builtin_memcpy(d->k.addr + 8, &w2, 4);
	__builtin_memcpy(d->k.addr + 12, &w3, 4);
	d->k.prefixlen = 64 + 128;
}

/*
 * An IPv6 address that carries an IPv4 one in its last word, which the IPv4 rules decide: IPv4-mapped, or
 * NAT64's well-known prefix 64:ff9b::/96 (a network's translator carries it to that IPv4 address).
 */
static __always_inline bool carries_v4(u32 w0, u32 w1, u32 w2)
{
	return (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff)) || (w0 == bpf_htonl(0x0064ff9b) && w1 == 0 && w2 == 0);
}

static __always_inline void read_dest(struct bpf_sock_addr *ctx, struct dest *d, bool v6)
{
	__builtin_memset(d, 0, sizeof(*d));
	u32 proto = ctx->protocol;
	d->proto = (proto == IPPROTO_TCP || proto == IPPROTO_UDP) ? proto : 0;
	d->port = bpf_ntohs((u16)ctx->user_port);
	if (!v6) {
		u32 a = ctx->user_ip4;
		__builtin_memcpy(d->given, &a, 4);
		d->sock_family = 4;
		if (a == 0) {
			/*
			 * connect(0.0.0.0) reaches this host: the kernel sends it to the socket's bound source
			 * address, or loopback when it has none; judged as that
			 */
			struct bpf_sock *sk = ctx->sk;
			u32 src = sk ? sk->src_ip4 : 0;
			a = src ? src : bpf_htonl(0x7f000001);
			d->flags |= BRIDLE_NEV_ANY;
		}
		dest_key4(d, a);
		return;
	}
	u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
	__builtin_memcpy(d->given, &w0, 4);
	__builtin_memcpy(d->given + 4, &w1, 4);
	__builtin_memcpy(d->given + 8, &w2, 4);
	__builtin_memcpy(d->given + 12, &w3, 4);
	d->sock_family = 6;
	if (carries_v4(w0, w1, w2)) {
		d->flags |= BRIDLE_NEV_MAPPED;
		if (w3 == 0 && w2 == bpf_htonl(0xffff)) {
			/* as connect(0.0.0.0): the bound source address (mapped), or loopback */
			struct bpf_sock *sk = ctx->sk;
			u32 src = sk && sk->src_ip6[0] == 0 && sk->src_ip6[1] == 0 && sk->src_ip6[2] == bpf_htonl(0xffff) ? sk->src_ip6[3] : 0;
			w3 = src ? src : bpf_htonl(0x7f000001);
			d->flags |= BRIDLE_NEV_ANY;
		}
		dest_key4(d, w3);
		return;
	}
	if (w0 == 0 && w1 == 0 && w2 == 0 && w3 == 0) {
		/* connect(::) reaches this host too */
		w3 = bpf_htonl(1);
		d->flags |= BRIDLE_NEV_ANY;
	}
	dest_key6(d, w0, w1, w2, w3);
}

/* Does port set `set` hold (proto, port)? On a hit, *rule is the rule that listed it. */
static __always_inline bool in_set(u32 set, u32 node_rule, struct dest *d, u32 *rule)
{
	if (set == BRIDLE_NET_SET_ALL) {
		*rule = node_rule;
		return true;
	}
	struct bridle_port_key pk = { .prefixlen = 64, .set = set, .proto = d->proto };
	pk.port[0] = d->port >> 8;
	pk.port[1] = d->port & 0xff;
	u32 *r = bpf_map_lookup_elem(&net_ports, &pk);
	if (!r)
		return false;
	*rule = *r == BRIDLE_NET_RULE_NODE ? node_rule : *r;
	return true;
}

/* The longest matching prefix of `trie`, then its shorter parents, until one's port set holds the port. */
static __always_inline bool match_trie(void *trie, struct dest *d, u32 *rule)
{
	struct bridle_net_key k = d->k;
	u32 full = k.prefixlen;
	for (int i = 0; i < BRIDLE_NET_DEPTH; i++) {
		struct bridle_net_node *n = bpf_map_lookup_elem(trie, &k);
		if (!n)
			return false;
		if (in_set(n->set, n->rule, d, rule))
			return true;
		if (!n->parent || n->parent >= full)
			return false;
		k.prefixlen = n->parent;
	}
	return false;
}

/* host: rules: the address came from an answer to this session's own DNS query, not yet expired. */
static __always_inline bool match_hosts(u64 session, u32 gen, struct dest *d, u32 *rule, bool any_age)
{
	struct bridle_dnsaddr_key ak = { .session = session, .family = d->k.family };
	__builtin_memcpy(ak.addr, d->k.addr, 16);
	struct bridle_dnsaddr *a = bpf_map_lookup_elem(&dns_addrs, &ak);
	if (!a || (!any_age && a->expires < bpf_ktime_get_boot_ns()))
		return false;
	for (int i = 0; i < BRIDLE_NET_HOSTS; i++) {
		if (!a->pattern[i])
			continue;
		struct bridle_host_key hk = { .gen = gen, .pattern = a->pattern[i] };
		struct bridle_net_node *n = bpf_map_lookup_elem(&net_hosts, &hk);
		if (n && in_set(n->set, n->rule, d, rule))
			return true;
	}
	return false;
}

struct verdict {
	u32 action; /* BRIDLE_ALLOW / BRIDLE_DENY */
	u32 kind;
	u32 rule;
	u32 gen;
};

/*
 * The verdict on `d` for a session under `cfg`. `established`: judging a connection made earlier (revisit),
 * for which a host: address the session once resolved counts whatever its TTL says now (the TTL bounds
 * new connects, not open ones).
 */
static __always_inline void decide_as(struct bridle_tag *tag, struct bridle_net_cfg *cfg, struct dest *d, struct verdict *v,
				      bool established)
{
	u32 rule = 0;
	d->k.gen = cfg->gen;
	v->gen = cfg->gen;
	if (match_trie(&net_deny, d, &rule)) {
		v->action = BRIDLE_DENY;
		v->kind = BRIDLE_NK_CIDR;
		v->rule = rule;
		return;
	}
	if (match_trie(&net_allow, d, &rule)) {
		v->action = BRIDLE_ALLOW;
		v->kind = BRIDLE_NK_CIDR;
		v->rule = rule;
		return;
	}
	if (match_hosts(tag->session, cfg->gen, d, &rule, established)) {
		v->action = BRIDLE_ALLOW;
		v->kind = BRIDLE_NK_HOST;
		v->rule = rule;
		return;
	}
	if ((cfg->flags & BRIDLE_NET_F_NAMES) && d->proto == IPPROTO_TCP && d->port == DNS_PORT) {
		/* DNS over TCP would bypass the resolver that fills host: addresses: only by explicit allow */
		v->action = BRIDLE_DENY;
		v->kind = BRIDLE_NK_DNS_TCP;
		v->rule = 0;
		return;
	}
	v->action = cfg->default_action == BRIDLE_DENY ? BRIDLE_DENY : BRIDLE_ALLOW;
	v->kind = BRIDLE_NK_DEFAULT;
	v->rule = cfg->default_rule;
}

static __always_inline void decide(struct bridle_tag *tag, struct bridle_net_cfg *cfg, struct dest *d, struct verdict *v)
{
	decide_as(tag, cfg, d, v, false);
}

/* A record of a decision about process `tgid` (exec key `key`), by thread `tid` of user `uid`. */
static __always_inline void report_for(struct bridle_tag *tag, u32 tgid, u64 key, u32 tid, u32 uid, struct dest *d,
				       u32 op, u32 verdict, struct verdict *v)
{
	struct bridle_net_ev *ev = bpf_ringbuf_reserve(&net_events, sizeof(*ev), 0);
	if (!ev) {
		count_loss(0);
		return;
	}
	hdr_fill(&ev->hdr, BRIDLE_EV_NET, sizeof(*ev));
	ev->session = tag->session;
	ev->key = key;
	ev->pid = tgid;
	ev->tid = tid;
	ev->uid = uid;
	ev->policy = tag->policy;
	ev->rule_id = v->rule;
	ev->dport = d->port;
	ev->family = d->sock_family;
	ev->proto = d->proto;
	ev->op = op;
	ev->verdict = verdict;
	ev->rule_kind = v->kind;
	ev->flags = d->flags;
	ev->gen = v->gen;
	__builtin_memcpy(ev->daddr, d->given, 16);
	bpf_ringbuf_submit(ev, rb_wake(&net_events, verdict != BRIDLE_ALLOW));
}

/* The same for the calling thread. */
static __always_inline void report(struct bridle_tag *tag, u32 tgid, struct dest *d, u32 op, u32 verdict,
				   struct verdict *v)
{
	report_for(tag, tgid, caller_key(tgid), (u32)bpf_get_current_pid_tgid(), (u32)bpf_get_current_uid_gid(), d, op,
		   verdict, v);
}

/* Allowed datagrams are reported once per process, destination and second; connects and denials always. */
static __always_inline bool seen_recently(u32 tgid, struct dest *d)
{
	struct bridle_net_recent rk = { .pid = tgid, .port = d->port, .family = d->sock_family, .proto = d->proto };
	__builtin_memcpy(rk.addr, d->given, 16);
	u64 now = bpf_ktime_get_coarse_ns(); /* a tick's precision is plenty for "once a second", and cheap on a VM */
	u64 *last = bpf_map_lookup_elem(&net_recent, &rk);
	if (last && now - *last < RECENT_NS)
		return true;
	bpf_map_update_elem(&net_recent, &rk, &now, BPF_ANY);
	return false;
}

/*
 * Port-53 UDP from a session goes to bridle's resolver on loopback. The resolver learns who asked from
 * the query's source port, so the client's socket must have one now: sendmsg has bound it already
 * (autobind runs before the hook); an unbound socket being connected is bound here to a random port.
 */
static __always_inline int redirect_dns(struct bpf_sock_addr *ctx, struct bridle_tag *tag, u32 tgid,
					struct dest *d, u16 rport, bool v6, bool can_bind)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return -1;
	u32 lport = sk->src_port;
	if (!lport) {
		if (!can_bind)
			return -1;
		for (int i = 0; i < BIND_TRIES && !lport; i++) {
			u16 p = 32768 + (bpf_get_prandom_u32() % 28232);
			int err;
			if (v6) {
				struct sockaddr_in6 sa = {};
				sa.sin6_family = AF_INET6;
				sa.sin6_port = bpf_htons(p);
				err = bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
			} else {
				struct sockaddr_in sa = {};
				sa.sin_family = AF_INET;
				sa.sin_port = bpf_htons(p);
				err = bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
			}
			if (!err)
				lport = p;
		}
		if (!lport)
			return -1;
	}
	u32 ck = ((u32)d->sock_family << 16) | (lport & 0xffff);
	struct bridle_dns_client c = {
		.session = tag->session,
		.key = caller_key(tgid),
		.ktime = bpf_ktime_get_boot_ns(),
		.pid = tgid,
		.policy = tag->policy,
		.orig_port = bpf_htons(d->port),
		.family = d->sock_family,
	};
	__builtin_memcpy(c.orig, d->given, 16);
	bpf_map_update_elem(&dns_clients, &ck, &c, BPF_ANY);
	if (v6) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
	} else {
		ctx->user_ip4 = bpf_htonl(0x7f000001);
	}
	ctx->user_port = bpf_htons(rport);
	return 0;
}

/*
 * A datagram socket usually sends to one destination over and over: its last decision is kept with the
 * socket (sk storage) and reused while the policy generation, session policy and destination are the same.
 * Decisions by host: rules are not kept (their addresses expire). The lock keeps a reader from seeing one
 * destination's key with another's verdict when threads share a socket.
 */
struct sk_verdict {
	struct bpf_spin_lock lock;
	u32 gen; /* 0: empty */
	u32 policy;
	u32 pid;  /* the process the last allow event was reported for */
	u16 port;
	u8 proto;
	u8 family;
	u32 addr[4];
	u32 action;
	u32 kind;
	u32 rule;
	u64 reported; /* coarse ns of the last allow event */
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_verdict);
} net_skcache SEC(".maps");

/* Looks the destination up in the socket's cache; on a hit fills *v and says whether to report. */
static __always_inline bool cached_verdict(struct sk_verdict *c, u32 gen, u32 policy, u32 tgid, struct dest *d,
					   struct verdict *v, bool *report_it)
{
	u32 a[4];
	__builtin_memcpy(a, d->k.addr, 16);
	u64 now = bpf_ktime_get_coarse_ns();
	bool hit = false;
	bpf_spin_lock(&c->lock);
	if (c->gen == gen && c->policy == policy && c->port == d->port && c->proto == d->proto &&
	    c->family == d->k.family && c->addr[0] == a[0] && c->addr[1] == a[1] && c->addr[2] == a[2] &&
	    c->addr[3] == a[3]) {
		hit = true;
		v->action = c->action;
		v->kind = c->kind;
		v->rule = c->rule;
		v->gen = gen;
		/* allowed datagrams: one event per process, destination and second */
		*report_it = c->action != BRIDLE_ALLOW || c->pid != tgid || now - c->reported >= RECENT_NS;
		if (*report_it) {
			c->pid = tgid;
			c->reported = now;
		}
	}
	bpf_spin_unlock(&c->lock);
	return hit;
}

static __always_inline void cache_verdict(struct sk_verdict *c, u32 policy, u32 tgid, struct dest *d, struct verdict *v)
{
	u32 a[4];
	__builtin_memcpy(a, d->k.addr, 16);
	u64 now = bpf_ktime_get_coarse_ns();
	bpf_spin_lock(&c->lock);
	c->gen = v->gen;
	c->policy = policy;
	c->port = d->port;
	c->proto = d->proto;
	c->family = d->k.family;
	c->addr[0] = a[0];
	c->addr[1] = a[1];
	c->addr[2] = a[2];
	c->addr[3] = a[3];
	c->action = v->action;
	c->kind = v->kind;
	c->rule = v->rule;
	c->pid = tgid;
	c->reported = now;
	bpf_spin_unlock(&c->lock);
}

/* Is `d` (as judged: mapped and unspecified addresses resolved) bridle's resolver, on loopback? */
static __always_inline bool to_resolver(struct dest *d, struct bridle_net_conf *conf)
{
	if (d->k.family == 4)
		return conf->dns_port4 && d->port == conf->dns_port4 && d->k.addr[0] == 127 && d->k.addr[1] == 0 &&
		       d->k.addr[2] == 0 && d->k.addr[3] == 1;
	u32 w[4];
	__builtin_memcpy(w, d->k.addr, 16);
	return conf->dns_port6 && d->port == conf->dns_port6 && w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(1);
}

static __always_inline int on_sock_addr(struct bpf_sock_addr *ctx, bool v6, u32 op)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct bridle_tag *tag = caller_tag(tgid);
	if (!tag)
		return 1; /* not a session: not ours to decide */
	u32 pid = tag->policy;
	struct bridle_net_cfg *cfg = net_policy(tag);
	if (!cfg)
		return 1; /* no network policy installed for this session's policy */

	struct dest d;
	read_dest(ctx, &d, v6);
	bool monitor = net_monitor(tag, cfg);
	struct verdict v = {};

	bool dns_denied = false;
	u32 zero = 0;
	struct bridle_net_conf *conf = bpf_map_lookup_elem(&net_conf, &zero);
	if (conf && d.proto == IPPROTO_UDP && to_resolver(&d, conf)) {
		/*
		 * Straight to bridle's resolver, not through the redirect: it would take the query for whoever
		 * used this source port last. Only the redirect below may send there.
		 */
		v.action = BRIDLE_DENY;
		v.kind = BRIDLE_NK_CONTROL;
		v.gen = cfg->gen;
		dns_denied = true;
	} else if ((cfg->flags & BRIDLE_NET_F_DNS) && d.proto == IPPROTO_UDP && d.port == DNS_PORT) {
		u16 rport = conf ? (v6 ? conf->dns_port6 : conf->dns_port4) : 0;
		if (rport && redirect_dns(ctx, tag, tgid, &d, rport, v6, op == BRIDLE_OP_CONNECT) == 0)
			return 1;
		/* no resolver to send it to, or no port to know the asker by: with host: rules the query must not escape */
		if (cfg->flags & BRIDLE_NET_F_NAMES) {
			v.action = BRIDLE_DENY;
			v.kind = BRIDLE_NK_DNS_BIND;
			v.gen = cfg->gen;
			dns_denied = true;
		}
	}
	bool report_it = true; /* denials always; allowed datagrams once per process, destination and second */
	if (!dns_denied) {
		struct sk_verdict *c = NULL;
		if (op == BRIDLE_OP_SENDMSG && ctx->sk)
			c = bpf_sk_storage_get(&net_skcache, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!c || !cached_verdict(c, cfg->gen, pid, tgid, &d, &v, &report_it)) {
			decide(tag, cfg, &d, &v);
			/* host: verdicts last as long as a DNS answer does: decided every time, never cached */
			if (c && v.kind != BRIDLE_NK_HOST)
				cache_verdict(c, pid, tgid, &d, &v);
			if (v.action == BRIDLE_ALLOW && op == BRIDLE_OP_SENDMSG)
				report_it = !seen_recently(tgid, &d);
		}
	}

	u32 verdict = net_verdict(v.action, monitor);
	if (report_it)
		report(tag, tgid, &d, op, verdict, &v);
	return verdict == BRIDLE_DENY ? 0 : 1;
}

SEC("cgroup/connect4")
int bridle_connect4(struct bpf_sock_addr *ctx)
{
	return on_sock_addr(ctx, false, BRIDLE_OP_CONNECT);
}

SEC("cgroup/connect6")
int bridle_connect6(struct bpf_sock_addr *ctx)
{
	return on_sock_addr(ctx, true, BRIDLE_OP_CONNECT);
}

SEC("cgroup/sendmsg4")
int bridle_sendmsg4(struct bpf_sock_addr *ctx)
{
	return on_sock_addr(ctx, false, BRIDLE_OP_SENDMSG);
}

SEC("cgroup/sendmsg6")
int bridle_sendmsg6(struct bpf_sock_addr *ctx)
{
	return on_sock_addr(ctx, true, BRIDLE_OP_SENDMSG);
}

/*
 * A reply from the resolver: the caller sees it come from the server it asked (resolvers such as
 * glibc's drop answers from any other address). Untagged sockets cost a compare.
 */
static __always_inline int on_recvmsg(struct bpf_sock_addr *ctx, bool v6)
{
	u32 zero = 0;
	struct bridle_net_conf *conf = bpf_map_lookup_elem(&net_conf, &zero);
	if (!conf)
		return 1;
	u16 rport = v6 ? conf->dns_port6 : conf->dns_port4;
	if (!rport || ctx->user_port != bpf_htons(rport))
		return 1;
	if (v6) {
		if (ctx->user_ip6[0] || ctx->user_ip6[1] || ctx->user_ip6[2] || ctx->user_ip6[3] != bpf_htonl(1))
			return 1;
	} else if (ctx->user_ip4 != bpf_htonl(0x7f000001)) {
		return 1;
	}
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	u32 ck = ((v6 ? 6u : 4u) << 16) | (sk->src_port & 0xffff);
	struct bridle_dns_client *c = bpf_map_lookup_elem(&dns_clients, &ck);
	if (!c || c->family != (v6 ? 6 : 4))
		return 1;
	if (v6) {
		u32 w[4];
		__builtin_memcpy(w, c->orig, 16);
		ctx->user_ip6[0] = w[0];
		ctx->user_ip6[1] = w[1];
		ctx->user_ip6[2] = w[2];
		ctx->user_ip6[3] = w[3];
	} else {
		u32 a;
		__builtin_memcpy(&a, c->orig, 4);
		ctx->user_ip4 = a;
	}
	ctx->user_port = c->orig_port;
	return 1;
}

SEC("cgroup/recvmsg4")
int bridle_recvmsg4(struct bpf_sock_addr *ctx)
{
	return on_recvmsg(ctx, false);
}

SEC("cgroup/recvmsg6")
int bridle_recvmsg6(struct bpf_sock_addr *ctx)
{
	return on_recvmsg(ctx, true);
}

/*
 * Named and abstract unix sockets (cgroup/connect_unix, cgroup/sendmsg_unix: Linux 6.7+; the loader
 * leaves them out where the kernel lacks them and says so). The kernel hands over the address as the
 * caller wrote it; it is hashed (FNV-1a 64, like the compiler) up to its NUL, an abstract name as '@'
 * and the name. Rules are matched by the forms the compiler knows (as written, normalized, real path);
 * any other spelling of a denied socket (symlink, hard link, relative path) is caught by its identity
 * once the connect completes (below).
 */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;


struct unix_scratch {
	struct bridle_unix_ev ev;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct unix_scratch);
} unix_scratch SEC(".maps");

static __always_inline bool unix_rule(u32 gen, u64 hash, struct bridle_rule *out)
{
	struct bridle_unix_key k = { .gen = gen, .path = hash };
	struct bridle_rule *r = bpf_map_lookup_elem(&unix_rules, &k);
	if (!r)
		return false;
	*out = *r;
	return true;
}

static __always_inline void unix_submit(struct bridle_unix_ev *src, struct bridle_tag *tag, u32 tgid)
{
	struct bridle_unix_ev *ev = bpf_ringbuf_reserve(&net_events, sizeof(*ev), 0);
	if (!ev) {
		count_loss(1);
		return;
	}
	__builtin_memcpy(ev, src, sizeof(*ev));
	u64 id = bpf_get_current_pid_tgid();
	hdr_fill(&ev->hdr, BRIDLE_EV_UNIX, sizeof(*ev));
	ev->session = tag->session;
	ev->key = caller_key(tgid);
	ev->pid = tgid;
	ev->tid = (u32)id;
	ev->uid = (u32)bpf_get_current_uid_gid();
	ev->policy = tag->policy;
	bpf_ringbuf_submit(ev, rb_wake(&net_events, ev->verdict != BRIDLE_ALLOW));
}

static __always_inline int on_unix(struct bpf_sock_addr *ctx, u32 op)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct bridle_tag *tag = caller_tag(tgid);
	if (!tag)
		return 1;
	struct bpf_sock_addr_kern *sa = bpf_cast_to_kern_ctx(ctx);
	if (op == BRIDLE_OP_CONNECT) {
		/* the socket being connected, for the identity check when connect() returns */
		u64 id = bpf_get_current_pid_tgid();
		struct unix_pending_val *pv = bpf_map_lookup_elem(&unix_pending, &id);
		if (pv)
			pv->sk = (u64)sa->sk;
	}
	u32 zero = 0;
	struct unix_scratch *sc = bpf_map_lookup_elem(&unix_scratch, &zero);
	if (!sc)
		return 1;
	struct bridle_unix_ev *ev = &sc->ev;
	__builtin_memset(ev, 0, sizeof(*ev));

	u32 len = sa->uaddrlen;
	u32 n = len > 2 ? len - 2 : 0; /* after sun_family */
	if (n > BRIDLE_UNIX_PATH)
		n = BRIDLE_UNIX_PATH;
	char *sun_path = (char *)sa->uaddr + 2;
	if (n && bpf_probe_read_kernel(ev->path, n & 0x7f, sun_path))
		n = 0;
	if (!n)
		return 1; /* autobind / unnamed: nothing to decide by */

	u64 h = FNV_OFF;
	u16 used = 0;
	bool abstract = ev->path[0] == 0;
	if (abstract) {
		ev->path[0] = '@';
		ev->flags |= BRIDLE_UEV_ABSTRACT;
	}
	for (int i = 0; i < BRIDLE_UNIX_PATH; i++) {
		if (i >= n)
			break;
		char c = ev->path[i];
		if (!c && !abstract)
			break;
		fnv(&h, c);
		used = i + 1;
	}
	ev->path_len = used;
	ev->op = op;

	struct bridle_rule r = {};
	u32 action = BRIDLE_ALLOW, kind = BRIDLE_NK_DEFAULT, rule = 0;
	bool monitor = tag->flags & BRIDLE_TAG_MONITOR;
	if (unix_rule(0, h, &r)) {
		/* bridle's own sockets: never from a session, whatever its policy or mode */
		action = BRIDLE_DENY;
		kind = BRIDLE_NK_CONTROL;
		monitor = false;
	} else {
		struct bridle_net_cfg *cfg = net_policy(tag);
		if (!cfg)
			return 1;
		monitor = net_monitor(tag, cfg);
		ev->gen = cfg->gen;
		if (unix_rule(cfg->gen, h, &r)) {
			action = r.action ? BRIDLE_DENY : BRIDLE_ALLOW;
			kind = BRIDLE_NK_UNIX;
			rule = r.rule_id;
		} else {
			action = cfg->unix_default ? BRIDLE_DENY : BRIDLE_ALLOW;
			kind = BRIDLE_NK_DEFAULT;
			rule = cfg->default_rule;
		}
	}
	u32 verdict = net_verdict(action, monitor);
	ev->verdict = verdict;
	ev->rule_kind = kind;
	ev->rule_id = rule;
	unix_submit(ev, tag, tgid);
	if (verdict == BRIDLE_WOULD_DENY) {
		/* reported by name: the identity check after this connect has nothing to add */
		u64 id = bpf_get_current_pid_tgid();
		bpf_map_delete_elem(&unix_pending, &id);
	}
	return verdict == BRIDLE_DENY ? 0 : 1;
}

SEC("cgroup/connect_unix")
int bridle_connect_unix(struct bpf_sock_addr *ctx)
{
	return on_unix(ctx, BRIDLE_OP_CONNECT);
}

SEC("cgroup/sendmsg_unix")
int bridle_sendmsg_unix(struct bpf_sock_addr *ctx)
{
	return on_unix(ctx, BRIDLE_OP_SENDMSG);
}

/*
 * The same rules by identity: when a session whose policy has unix deny rules completes a connect() on a
 * unix socket, the peer's socket file (device, inode) is looked up. A denied one was reached under another
 * name; the connection exists already, so the process is killed before it returns to user space (monitor
 * mode reports would_deny). Syscall tracepoints carry the arguments at fixed offsets after the common
 * fields.
 */
struct sys_enter_connect_args {
	u64 common;
	s32 nr;
	u32 pad;
	s64 fd;
	u64 uservaddr;
	s64 addrlen;
};

struct sys_exit_args {
	u64 common;
	s32 nr;
	u32 pad;
	s64 ret;
};

#define EINPROGRESS 115
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define AF_UNIX 1

/*
 * Is this a session's unix connect, to be checked by identity when it returns? Every session's is:
 * bridle's own sockets (the agent's control socket) are unreachable from any session by identity too, so
 * that no other name for them (a symlink, a bind mount) gets through. Other families are left alone by
 * their address's first word; an address that cannot be read is checked (the kernel will fail it anyway).
 */
static __always_inline bool unix_check_after(u32 tgid, u64 uservaddr)
{
	struct bridle_tag *tag = caller_tag(tgid);
	if (!tag)
		return false;
	/*
	 * Under unix: rules by identity, every connect: another thread could change the address's family
	 * after it is read here and before the kernel copies it. (For bridle's own socket alone, such a
	 * connect still meets the agent's own check of the peer.)
	 */
	struct bridle_net_cfg *cfg = net_policy(tag);
	if (cfg && (cfg->flags & BRIDLE_NET_F_UNIX_INO))
		return true;
	u16 family = 0;
	return bpf_probe_read_user(&family, sizeof(family), (void *)uservaddr) || family == AF_UNIX;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int bridle_unix_enter(struct sys_enter_connect_args *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!unix_check_after(tgid, ctx->uservaddr))
		return 0;
	u64 id = bpf_get_current_pid_tgid();
	struct unix_pending_val v = { .fd = ctx->fd };
	if (bpf_map_update_elem(&unix_pending, &id, &v, BPF_ANY)) {
		/* 262,144 connects in flight: this one could not be checked afterwards, so it does not happen */
		bpf_send_signal(9);
	}
	return 0;
}

static __always_inline bool ino_rule(u32 gen, u64 dev, u64 ino, struct bridle_rule *out)
{
	struct bridle_unix_ino_key k = { .gen = gen, .dev = dev, .ino = ino };
	struct bridle_rule *r = bpf_map_lookup_elem(&unix_inodes, &k);
	if (!r)
		return false;
	*out = *r;
	return true;
}

/*
 * After a session process's unix connect succeeded (on socket `sk`): a socket that unix: rules deny by
 * identity kills the process, whatever name reached it (a symlink, a hard link, a bind mount,
 * /proc/<pid>/root/...); so does, under an allow list, a socket that is none of the allowed ones.
 */
static __always_inline int unix_connected(struct sock *sk, u32 tgid)
{
	if (!sk || BPF_CORE_READ(sk, __sk_common.skc_family) != AF_UNIX)
		return 0;
	struct unix_sock *peer = (struct unix_sock *)BPF_CORE_READ((struct unix_sock *)sk, peer);
	if (!peer)
		return 0;
	struct dentry *d = BPF_CORE_READ(peer, path.dentry);
	if (!d)
		return 0; /* abstract or unnamed: decided by name at the hook */
	struct inode *ino = BPF_CORE_READ(d, d_inode);
	if (!ino)
		return 0;
	u64 dev = BPF_CORE_READ(ino, i_sb, s_dev);
	u64 inum = BPF_CORE_READ(ino, i_ino);

	/* the tag is looked up only now: the reads above leave no register to keep it in */
	struct bridle_tag *tag = caller_tag(tgid);
	if (!tag)
		return 0;
	struct bridle_rule r = {};
	struct bridle_net_cfg *cfg = net_policy(tag);
	u32 kind = BRIDLE_NK_UNIX_INODE;
	bool monitor = false;
	if (ino_rule(0, dev, inum, &r)) {
		/* bridle's own socket, under another name: never from a session, monitor mode included */
		kind = BRIDLE_NK_CONTROL;
		monitor = false;
	} else if (!cfg || !(cfg->flags & BRIDLE_NET_F_UNIX_INO)) {
		return 0;
	} else if (ino_rule(cfg->gen, dev, inum, &r)) {
		if (!r.action)
			return 0; /* one of the allowed sockets */
	} else if (cfg->unix_default) {
		/* an allow list: reached under an allowed name, but not one of the allowed sockets */
		kind = BRIDLE_NK_DEFAULT;
		r.rule_id = cfg->default_rule;
	} else {
		return 0;
	}
	if (kind != BRIDLE_NK_CONTROL)
		monitor = net_monitor(tag, cfg);
	if (!monitor)
		bpf_send_signal(9);

	u32 zero = 0;
	struct unix_scratch *sc = bpf_map_lookup_elem(&unix_scratch, &zero);
	if (!sc)
		return 0;
	struct bridle_unix_ev *ev = &sc->ev;
	__builtin_memset(ev, 0, sizeof(*ev));
	/* the name the socket was bound under (the peer's address) */
	struct unix_address *ua = BPF_CORE_READ(peer, addr);
	if (ua) {
		int alen = BPF_CORE_READ(ua, len);
		u32 n = alen > 2 ? alen - 2 : 0;
		if (n > BRIDLE_UNIX_PATH)
			n = BRIDLE_UNIX_PATH;
		if (n && !bpf_probe_read_kernel(ev->path, n & 0x7f, (char *)ua->name + 2)) {
			u16 used = 0;
			for (int i = 0; i < BRIDLE_UNIX_PATH; i++) {
				if (i >= n || !ev->path[i])
					break;
				used = i + 1;
			}
			ev->path_len = used;
		}
	}
	ev->op = BRIDLE_OP_CONNECT;
	ev->flags = monitor ? 0 : BRIDLE_UEV_KILLED;
	ev->verdict = monitor ? BRIDLE_WOULD_DENY : BRIDLE_DENY;
	ev->rule_kind = kind;
	ev->rule_id = r.rule_id;
	ev->gen = cfg && kind != BRIDLE_NK_CONTROL ? cfg->gen : 0;
	unix_submit(ev, tag, tgid);
	return 0;
}

/* The same for the socket open as file `f`. */
static __always_inline int unix_connected_file(struct file *f, u32 tgid)
{
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	return unix_connected(BPF_CORE_READ(sock, sk), tgid);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int bridle_unix_exit(struct sys_exit_args *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct unix_pending_val *pv = bpf_map_lookup_elem(&unix_pending, &id);
	if (!pv)
		return 0;
	s64 fd = pv->fd;
	struct sock *sk = (struct sock *)pv->sk;
	bpf_map_delete_elem(&unix_pending, &id);
	if (ctx->ret != 0 && ctx->ret != -EINPROGRESS)
		return 0;
	u32 tgid = id >> 32;
	/*
	 * The socket the hook saw: another thread may have closed or replaced the descriptor meanwhile (a
	 * dup of it keeps the connection). The connect's own reference kept it alive until the call
	 * returned; a read after that finds at worst another socket, never a fault.
	 */
	if (sk)
		return unix_connected(sk, tgid);
	if (fd < 0)
		return 0;

	struct task_struct *t = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	if (!fdt || (u64)fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return 0;
	return unix_connected_file(f, tgid);
}

/*
 * io_uring connects (IORING_OP_CONNECT) make no connect(2) call: their completion, which runs in a thread
 * of the submitting process, gets the same check by identity.
 */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(bridle_uring_unix_connect, struct io_ring_ctx *ring, void *req, struct io_uring_cqe *cqe)
{
	struct io_kiocb *r = req;
	if (BPF_CORE_READ(r, opcode) != bpf_core_enum_value(enum io_uring_op, IORING_OP_CONNECT))
		return 0;
	s32 res = BPF_CORE_READ(cqe, res);
	if (res != 0 && res != -EINPROGRESS)
		return 0;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!caller_tag(tgid))
		return 0;
	struct file *f = BPF_CORE_READ(r, file);
	return f ? unix_connected_file(f, tgid) : 0;
}

/*
 * Sockets that carry traffic no connect or sendmsg hook sees (decided_by_hooks says which do not): a
 * session with a network policy may not open them. Inet sockets are refused at creation (EPERM, io_uring
 * included); other families are not inet, so the socket() system call is watched instead and the process
 * killed.
 */
#define SOCK_DGRAM 2
#define SOCK_TYPE_MASK 0xf
#define AF_NETLINK 16
#define AF_ALG 38


/*
 * A socket a session with a network policy may not have (it would carry traffic no connect or send hook
 * decides): reported, and its verdict returned; BRIDLE_ALLOW when it is not ours to decide.
 */
static __always_inline u32 refuse_socket_op(u32 op, u32 family, u32 type, u32 proto)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct bridle_tag *tag = caller_tag(tgid);
	if (!tag)
		return BRIDLE_ALLOW;
	struct bridle_net_cfg *cfg = net_policy(tag);
	if (!cfg)
		return BRIDLE_ALLOW;
	u32 verdict = net_monitor(tag, cfg) ? BRIDLE_WOULD_DENY : BRIDLE_DENY;
	struct dest d = {};
	d.port = type;
	d.proto = proto;
	d.sock_family = family == AF_INET6 ? 6 : family == AF_INET ? 4 : 0;
	d.given[0] = family;
	struct verdict v = { .action = BRIDLE_DENY, .kind = BRIDLE_NK_RAW, .gen = cfg->gen };
	report(tag, tgid, &d, op, verdict, &v);
	return verdict;
}

static __always_inline u32 refuse_socket(u32 family, u32 type, u32 proto)
{
	return refuse_socket_op(BRIDLE_OP_SOCKET, family, type, proto);
}

#define BRIDLE_IPPROTO_MPTCP 262

/*
 * The inet sockets whose traffic the connect and sendmsg hooks decide: TCP and MPTCP streams, UDP
 * datagrams. Any other kind would carry traffic past them: raw and ICMP sockets, and protocols whose
 * connect runs no cgroup hook (UDP-Lite: a connected socket's datagrams are never decided; SCTP, L2TP/IP
 * where the kernel has them). An allow list, so a protocol added to the kernel later is refused too.
 */
static __always_inline bool decided_by_hooks(u32 type, u32 proto)
{
	if (type == SOCK_STREAM)
		return proto == 0 || proto == IPPROTO_TCP || proto == BRIDLE_IPPROTO_MPTCP;
	if (type == SOCK_DGRAM)
		return proto == 0 || proto == IPPROTO_UDP;
	return false;
}

SEC("cgroup/sock_create")
int bridle_sock_create(struct bpf_sock *sk)
{
	u32 type = sk->type & SOCK_TYPE_MASK, proto = sk->protocol;
	if (decided_by_hooks(type, proto))
		return 1;
	return refuse_socket(sk->family, type, proto) == BRIDLE_DENY ? 0 : 1;
}

#define BRIDLE_IP_OPTIONS 4
#define BRIDLE_IPV6_2292RTHDR 5
#define BRIDLE_IPV6_2292PKTOPTIONS 6
#define BRIDLE_IPV6_RTHDR 57

/*
 * Socket options that send packets somewhere other than the address the connect and sendmsg hooks
 * judged: an IPv6 routing header (IPV6_RTHDR, which Linux lets any user set with a segment routing header,
 * whose segment becomes the packet's destination; the RFC 2292 forms), IPv4 source routing (IP_OPTIONS,
 * root only). Refused to sessions with a network policy; io_uring's setsockopt comes through here too.
 */
SEC("cgroup/setsockopt")
int bridle_setsockopt(struct bpf_sockopt *ctx)
{
	/*
	 * Values over a page are not copied for the program; before Linux 6.5 the call fails (EFAULT) unless
	 * the program says to use the caller's own buffer (optlen 0). Every process's setsockopt comes here.
	 */
	if (ctx->optlen > 4096)
		ctx->optlen = 0;
	int level = ctx->level, opt = ctx->optname;
	bool route = (level == IPPROTO_IP && opt == BRIDLE_IP_OPTIONS) ||
		     (level == IPPROTO_IPV6 && (opt == BRIDLE_IPV6_RTHDR || opt == BRIDLE_IPV6_2292RTHDR ||
						 opt == BRIDLE_IPV6_2292PKTOPTIONS));
	if (!route)
		return 1;
	struct bpf_sock *sk = ctx->sk;
	u32 family = sk ? sk->family : 0;
	return refuse_socket_op(BRIDLE_OP_SOCKOPT, family, (u32)opt, (u32)level) == BRIDLE_DENY ? 0 : 1;
}

struct sys_enter_socket_args {
	u64 common;
	s32 nr;
	u32 pad;
	s64 family;
	s64 type;
	s64 protocol;
};

/*
 * Families that carry no traffic past the hooks: unix (its own rules), inet (sock_create decides),
 * netlink (the kernel itself: interfaces, routes), alg (the kernel's crypto). Any other, packet sockets,
 * vsock to the hypervisor, TIPC, RDS, XDP, Bluetooth, CAN and those added later, would: a session with a
 * network policy that asks for one is killed (no cgroup hook sees them, so nothing can refuse them).
 */
static __always_inline void guard_family(u64 fam, u32 type, u32 proto)
{
	if (fam == AF_UNIX || fam == AF_INET || fam == AF_INET6 || fam == AF_NETLINK || fam == AF_ALG)
		return;
	if (refuse_socket((u32)fam, type & SOCK_TYPE_MASK, proto) == BRIDLE_DENY)
		bpf_send_signal(9);
}

SEC("tracepoint/syscalls/sys_enter_socket")
int bridle_packet_guard(struct sys_enter_socket_args *ctx)
{
	/* killed before socket() returns: the process never holds the socket */
	guard_family(ctx->family, ctx->type, ctx->protocol);
	return 0;
}

/*
 * io_uring creates sockets without socket(2) (IORING_OP_SOCKET, Linux 5.19+). Decided when the request is
 * submitted, after its arguments were read and before it runs: the submitter (or its SQPOLL thread, a
 * thread of the same process) is killed, so no later request of its own can use the socket. Requests
 * linked behind it in the same submission run before the kill lands (see the note on issue 3).
 */
SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(bridle_uring_socket_guard, struct io_kiocb *req)
{
	if (!bpf_core_enum_value_exists(enum io_uring_op, IORING_OP_SOCKET) ||
	    BPF_CORE_READ(req, opcode) != bpf_core_enum_value(enum io_uring_op, IORING_OP_SOCKET))
		return 0;
	struct io_socket *s = (void *)&req->cmd;
	guard_family(BPF_CORE_READ(s, domain), BPF_CORE_READ(s, type), BPF_CORE_READ(s, protocol));
	return 0;
}

/*
 * Connections made before a decision could see them: by a process `bridle attach` has just tagged, or
 * under the policy a reload replaces. The supervisor runs these iterators then: the first counts, by
 * cookie (never reused), the descriptors session processes hold on each inet socket; the other two judge
 * each outgoing connected TCP and UDP socket counted against the session's policy in force, as a connect
 * to its peer would be, and close a denied one (bpf_sock_destroy: the program gets ECONNABORTED).
 *  - Only what a connect would have decided: a socket whose local port has a listener (an accepted,
 *    inbound connection) or lies outside the ephemeral range (a server's, or one bound on purpose) is
 *    left alone, and so are a session's DNS sockets, which the redirect points at the resolver.
 *  - Only what is the session's alone: a socket the file of which has references besides the session's
 *    descriptors (a process outside every session holds it, or it is in flight over a unix socket, or an
 *    io_uring holds it) is reported (would_deny), not closed. So is everything in monitor mode.
 */
extern int bpf_sock_destroy(struct sock_common *sk) __ksym __weak;

struct revisit_owner {
	u32 tgid;
	u32 uid;
	u64 key;
	u32 slots; /* descriptors session processes hold on it */
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, u64);
	__type(value, struct revisit_owner);
} revisit SEC(".maps");

/* Local ports with a TCP listener (the tcp iterator meets listeners first). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, u32);
	__type(value, u8);
} revisit_listen SEC(".maps");

/* The ephemeral port range (net.ipv4.ip_local_port_range), written by the supervisor before a run. */
struct revisit_cfg {
	u32 lo;
	u32 hi;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct revisit_cfg);
} revisit_conf SEC(".maps");

#define TCP_TIME_WAIT 6
#define TCP_CLOSE 7
#define TCP_LISTEN 10
#define TCP_NEW_SYN_RECV 12

SEC("iter/task_file")
int bridle_session_socks(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct task_struct *task = ctx->task;
	if (!file || !task)
		return 0;
	/* every open file of every task comes here: the cheap tests first */
	struct socket *sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	struct sock *sk = sock->sk;
	if (!sk)
		return 0;
	u16 fam = sk->__sk_common.skc_family;
	if (fam != AF_INET && fam != AF_INET6)
		return 0;
	u32 tgid = task->tgid;
	struct bridle_tag *tag = tag_of(tgid, task);
	if (!tag || !net_policy(tag))
		return 0;
	u64 cookie = bpf_get_socket_cookie(sk);
	struct revisit_owner *o = bpf_map_lookup_elem(&revisit, &cookie);
	if (o) {
		__sync_fetch_and_add(&o->slots, 1);
		return 0;
	}
	struct revisit_owner n = { .tgid = tgid, .uid = BPF_CORE_READ(task, cred, uid.val), .key = proc_key(tgid, task), .slots = 1 };
	bpf_map_update_elem(&revisit, &cookie, &n, BPF_NOEXIST);
	return 0;
}

/* struct file before Linux 6.13 counted its references in f_count. */
struct file___old {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

/* References to the file of socket `skc`; 0 when they cannot be told. */
static __always_inline u64 file_refs(struct sock_common *skc)
{
	struct file *f = BPF_CORE_READ((struct sock *)skc, sk_socket, file);
	if (!f)
		return 0;
	if (bpf_core_field_exists(((struct file___old *)0)->f_count))
		return BPF_CORE_READ((struct file___old *)f, f_count.counter);
	/* file_ref_t: one reference is 0; released or saturated counts are far above this */
	s64 c = BPF_CORE_READ(f, f_ref.refcnt.counter);
	return c >= 0 && c < (1LL << 40) ? (u64)c + 1 : 0;
}

/* The peer of a connected socket as a connect to it would be judged (mapped and NAT64 forms as IPv4). */
static __always_inline bool peer_dest(struct sock_common *skc, u32 proto, struct dest *d)
{
	__builtin_memset(d, 0, sizeof(*d));
	d->proto = proto;
	d->port = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	if (!d->port)
		return false;
	u16 fam = BPF_CORE_READ(skc, skc_family);
	if (fam == AF_INET) {
		u32 a = BPF_CORE_READ(skc, skc_daddr);
		if (!a)
			return false;
		d->sock_family = 4;
		__builtin_memcpy(d->given, &a, 4);
		dest_key4(d, a);
		return true;
	}
	struct in6_addr a6 = BPF_CORE_READ(skc, skc_v6_daddr);
	u32 w0 = a6.in6_u.u6_addr32[0], w1 = a6.in6_u.u6_addr32[1], w2 = a6.in6_u.u6_addr32[2], w3 = a6.in6_u.u6_addr32[3];
	if (!(w0 | w1 | w2 | w3))
		return false;
	d->sock_family = 6;
	__builtin_memcpy(d->given, &a6, 16);
	if (carries_v4(w0, w1, w2)) {
		d->flags |= BRIDLE_NEV_MAPPED;
		dest_key4(d, w3);
		return true;
	}
	dest_key6(d, w0, w1, w2, w3);
	return true;
}

static __always_inline void revisit_one(struct sock_common *skc, u32 proto)
{
	u64 cookie = bpf_get_socket_cookie(skc);
	struct revisit_owner *o = bpf_map_lookup_elem(&revisit, &cookie);
	if (!o)
		return;
	/* outgoing only: a local port in the ephemeral range, and no listener on it */
	u32 zero = 0;
	struct revisit_cfg *rc = bpf_map_lookup_elem(&revisit_conf, &zero);
	u32 lport = BPF_CORE_READ(skc, skc_num);
	if (!rc || lport < rc->lo || lport > rc->hi || bpf_map_lookup_elem(&revisit_listen, &lport))
		return;
	u32 tgid = o->tgid;
	struct bridle_tag *tag = bpf_map_lookup_elem(&tags, &tgid);
	if (!tag)
		return;
	struct bridle_net_cfg *cfg = net_policy(tag);
	if (!cfg)
		return;
	struct dest d;
	if (!peer_dest(skc, proto, &d))
		return;
	struct bridle_net_conf *conf = bpf_map_lookup_elem(&net_conf, &zero);
	if (proto == IPPROTO_UDP && conf && to_resolver(&d, conf))
		return; /* a DNS socket the redirect pointed at bridle's resolver */
	struct verdict v = {};
	decide_as(tag, cfg, &d, &v, true);
	if (v.action != BRIDLE_DENY)
		return;
	u32 verdict = net_verdict(v.action, net_monitor(tag, cfg));
	if (verdict == BRIDLE_DENY && bpf_sock_destroy && file_refs(skc) == o->slots)
		bpf_sock_destroy(skc);
	else if (verdict == BRIDLE_DENY)
		verdict = BRIDLE_WOULD_DENY; /* not the session's alone, or no bpf_sock_destroy (Linux 6.5+): reported only */
	report_for(tag, tgid, o->key, 0, o->uid, &d, BRIDLE_OP_REVISIT, verdict, &v);
}

SEC("iter/tcp")
int bridle_revisit_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	u8 state = skc->skc_state;
	if (state == TCP_LISTEN) {
		u32 port = skc->skc_num;
		u8 one = 1;
		bpf_map_update_elem(&revisit_listen, &port, &one, BPF_ANY);
		return 0;
	}
	if (state == TCP_CLOSE || state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		return 0;
	revisit_one(skc, IPPROTO_TCP);
	return 0;
}

SEC("iter/udp")
int bridle_revisit_udp(struct bpf_iter__udp *ctx)
{
	struct udp_sock *u = ctx->udp_sk;
	if (!u)
		return 0;
	revisit_one(&u->inet.sk.__sk_common, IPPROTO_UDP);
	return 0;
}
