/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Network reach: the structs bpf/net.bpf.c shares with src/kernel/net.ts. Same rules as bridle.h:
 * fixed-width types, natural alignment, explicit padding; LAYOUT in src/kernel/layout.ts mirrors them and
 * test/kernel/layout.test.ts compares them with the BTF of bpf/build/net.bpf.o.
 *
 * Addresses are kept as 16 bytes in network order; an IPv4 address (or an IPv4-mapped IPv6 one) is
 * family 4 with its 4 bytes first and the rest zero, so v4-mapped destinations meet the IPv4 rules.
 */
#ifndef BRIDLE_NET_H
#define BRIDLE_NET_H

#include "bridle.h"

#define BRIDLE_NET_DEPTH 8   /* nested prefixes of one trie a decision follows (compiler enforces) */
#define BRIDLE_NET_HOSTS 4   /* host: patterns remembered per resolved address */
#define BRIDLE_UNIX_PATH 108 /* sizeof(sun_path) */
#define BRIDLE_NET_SET_ALL 0 /* port set 0: every port, every protocol (no second lookup) */
#define BRIDLE_NET_RULE_NODE 0xffffffffu /* port-set value: "the rule of the address entry" */

/* Event types of the net sensor's ring buffer (disjoint from enum bridle_ev). */
enum bridle_net_evtype {
	BRIDLE_EV_NET = 16,
	BRIDLE_EV_UNIX = 17,
};

/* bridle_net_ev.op */
enum bridle_net_op {
	BRIDLE_OP_CONNECT = 1,
	BRIDLE_OP_SENDMSG = 2,
	BRIDLE_OP_UNIX = 3,
	BRIDLE_OP_SOCKET = 4, /* a raw, ICMP or packet socket: dport holds the socket type, daddr[0] the family */
	BRIDLE_OP_SOCKOPT = 5, /* a socket option that routes past the hooks: dport holds the option, proto the level, daddr[0] the family */
	BRIDLE_OP_REVISIT = 6, /* a connection made earlier, judged again (after attach, or a new policy): closed when denied */
};

/* bridle_net_ev.rule_kind: what decided */
enum bridle_net_kind {
	BRIDLE_NK_DEFAULT = 0,
	BRIDLE_NK_CIDR = 1,     /* rule_id names a cidr: rule */
	BRIDLE_NK_HOST = 2,     /* rule_id names a host: rule; the address came from the session's DNS */
	BRIDLE_NK_DNS_TCP = 3,  /* builtin: TCP to port 53 needs an explicit allow */
	BRIDLE_NK_DNS_BIND = 4, /* builtin: a DNS socket could not be given a port to track it by */
	BRIDLE_NK_UNIX = 5,     /* rule_id names a network.unix entry */
	BRIDLE_NK_CONTROL = 6,  /* builtin: bridle's own control socket */
	BRIDLE_NK_UNIX_INODE = 7, /* rule_id names a network.unix entry, matched by the socket file's identity */
	BRIDLE_NK_RAW = 8,        /* builtin: sockets that would carry traffic past connect/sendmsg decisions */
};

/* bridle_net_cfg.flags */
#define BRIDLE_NET_F_MONITOR (1u << 0) /* same bit as BRIDLE_TAG_MONITOR */
#define BRIDLE_NET_F_DNS (1u << 1)     /* port-53 UDP goes to bridle's resolver (when it listens) */
#define BRIDLE_NET_F_NAMES (1u << 2)   /* host: rules decide: DNS that would bypass the resolver needs an explicit allow */
#define BRIDLE_NET_F_UNIX_INO (1u << 3) /* unix deny rules by socket-file identity: check connects after they complete */

/* bridle_net_ev.flags */
#define BRIDLE_NEV_MAPPED (1u << 0) /* IPv6 socket, IPv4-mapped destination: judged as IPv4 */
#define BRIDLE_NEV_ANY (1u << 1)    /* destination was the unspecified address: judged as loopback */

/* Per-policy network settings (key: policy id, the number tags carry). Rules are keyed by gen. */
struct bridle_net_cfg {
	u32 gen;
	u32 default_action;
	u32 default_rule;
	u32 flags;
	u32 unix_default; /* action for unix connects no rule names */
	u32 pad;
};

/* Host-wide settings (one-entry array). Ports in host order; 0 = resolver not listening. */
struct bridle_net_conf {
	u16 dns_port4;
	u16 dns_port6;
	u32 flags;
};

/* Address tries (LPM): data = gen, family, address. prefixlen = 64 + address prefix length. */
struct bridle_net_key {
	u32 prefixlen;
	u32 gen;
	u32 family; /* 4 or 6 */
	u8 addr[16];
};

/* Value of an address-trie or host entry. */
struct bridle_net_node {
	u32 set;    /* port set (net_ports), BRIDLE_NET_SET_ALL for every port and protocol */
	u32 parent; /* prefixlen of the nearest shorter prefix with rules in the same trie; 0: none */
	u32 rule;   /* rule_id reported when the port set says BRIDLE_NET_RULE_NODE */
	u32 pad;
};

/*
 * Port sets (LPM): data = set, protocol, port (big-endian). A port range is stored as the aligned
 * power-of-two blocks that cover it, so a lookup costs the same for one port or a thousand ranges.
 * prefixlen = 48 + block prefix length. proto 0 holds rules for protocols other than TCP and UDP.
 */
struct bridle_port_key {
	u32 prefixlen;
	u32 set;
	u16 proto;
	u8 port[2];
};

/* host: rules of a generation (key: gen, FNV-1a 64 of the pattern as written, e.g. "*.github.com"). */
struct bridle_host_key {
	u32 gen;
	u32 pad;
	u64 pattern;
};

/* Addresses a session's own DNS answers gave it (key: session + address). */
struct bridle_dnsaddr_key {
	u64 session;
	u32 family;
	u32 pad;
	u8 addr[16];
};

struct bridle_dnsaddr {
	u64 expires; /* bpf_ktime_get_boot_ns() deadline */
	u64 pattern[BRIDLE_NET_HOSTS]; /* host: patterns the answered name matched (0 = unused) */
};

/*
 * A datagram to port 53 redirected to bridle's resolver (key: family << 16 | the client's local port,
 * which is what the resolver sees as the query's source).
 */
struct bridle_dns_client {
	u64 session;
	u64 key;   /* exec key of the asking process (exec_id) */
	u64 ktime; /* when it was redirected */
	u32 pid;
	u32 policy;
	u8 orig[16];   /* the server it asked (network order; an IPv6 socket's form as given) */
	u16 orig_port; /* network order */
	u16 family;    /* the socket's family: 4 or 6 */
	u32 pad;
};

/* unix: rules (key: gen, FNV-1a 64 of the absolute socket path). */
struct bridle_unix_key {
	u32 gen;
	u32 pad;
	u64 path;
};

/*
 * unix: deny rules by the socket file's identity (key: gen, kernel s_dev, inode), so a symlink, hard link,
 * bind mount or relative path to a denied socket is caught too. (bridle's own sockets, gen 0 of
 * unix_rules, are matched by name only: they also refuse session peers by SO_PEERCRED.)
 */
struct bridle_unix_ino_key {
	u32 gen;
	u32 pad;
	u64 dev;
	u64 ino;
};

/* bridle_unix_ev.flags */
#define BRIDLE_UEV_ABSTRACT (1u << 0) /* abstract name (no file): path holds it after an '@' */
#define BRIDLE_UEV_KILLED (1u << 1)   /* decided after the connect completed: the process was sent SIGKILL */

/* Allowed-sendmsg dedup (key): one allow event per process, destination and second. */
struct bridle_net_recent {
	u32 pid;
	u16 port;
	u8 family;
	u8 proto;
	u8 addr[16];
};

/* A connect or an unconnected datagram, decided. */
struct bridle_net_ev {
	struct bridle_hdr hdr;
	u64 session;
	u64 key; /* exec key of the calling process */
	u32 pid;
	u32 tid;
	u32 uid;
	u32 policy;
	u32 rule_id;
	u16 dport;   /* host order */
	u8 family;   /* socket family: 4 or 6 */
	u8 proto;    /* IPPROTO_TCP, IPPROTO_UDP, other */
	u8 op;       /* enum bridle_net_op */
	u8 verdict;  /* enum bridle_verdict */
	u8 rule_kind; /* enum bridle_net_kind */
	u8 flags;    /* BRIDLE_NEV_* */
	u32 gen;     /* generation of the policy that decided: its rule table names rule_id */
	u8 daddr[16]; /* as given by the caller, network order */
};

/* A connect to a named unix socket, decided. */
struct bridle_unix_ev {
	struct bridle_hdr hdr;
	u64 session;
	u64 key;
	u32 pid;
	u32 tid;
	u32 uid;
	u32 policy;
	u32 rule_id;
	u8 verdict;
	u8 rule_kind;
	u16 path_len;
	char path[BRIDLE_UNIX_PATH];
	u8 op;    /* enum bridle_net_op: connect or sendmsg */
	u8 flags; /* BRIDLE_UEV_* */
	u16 pad;
	u32 gen;  /* generation of the policy that decided (0: bridle's own sockets) */
	u32 pad2;
};

#ifdef __BPF__
_Static_assert(sizeof(struct bridle_net_key) == 28, "net key");
_Static_assert(sizeof(struct bridle_port_key) == 12, "port key");
_Static_assert(sizeof(struct bridle_net_node) == 16, "net node");
_Static_assert(sizeof(struct bridle_dnsaddr_key) == 32, "dnsaddr key");
_Static_assert(sizeof(struct bridle_dns_client) == 56, "dns client");
_Static_assert(sizeof(struct bridle_net_ev) == 80, "net ev");
_Static_assert(sizeof(struct bridle_unix_ev) % 8 == 0, "unix ev");
_Static_assert(sizeof(struct bridle_unix_ino_key) == 24, "unix ino key");
#endif

#endif
