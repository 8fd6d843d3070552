// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// rolegate steering: cgroup socket-address hooks that send a local client's TCP connect()
// to a listener's address straight to the backend the routing table names, so the bytes
// flow client -> database without the proxy. rolegate (src/data_plane/steer) writes `routes`
// from the same step that stores a new routing table; an absent entry means "leave the
// destination alone", so the connection reaches rolegate's own listener (queue, refusal).
//
// Built by build.rs with `clang -target bpf -O2 -g` against the uapi headers and libbpf's
// bpf_helpers.h and bpf_core_read.h only (no vmlinux.h), so the object does not depend on the
// build machine's kernel: the one kernel-internal field it reads (a socket's IPv6-only bit) is
// a CO-RE relocation resolved against the running kernel's BTF at load. Addresses and ports
// are kept exactly as the hooks see them (network byte order); every address is an IPv6 one,
// IPv4 as `::ffff:a.b.c.d`, so one map serves both families.
//
// Cost per connect: one hash lookup; a second one only for a loopback destination that has
// no entry of its own (the wildcard listeners' entry, see `wildcard`). No loop over a map.
// An IPv6 destination sent to an IPv4 backend also reads one bit of the socket
// (`reaches_mapped`).

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define SOCK_STREAM 1
/* Candidates per steered listener; rolegate writes at most this many. */
#define STEER_MAX_BACKENDS 8

/* A listener's address or a backend's: `user_ip6` (IPv4 mapped) and `user_port`. */
struct addr {
	__u32 ip6[4];
	__u32 port;
};

/* Where connects to one listener address go now: `count` backends, round robin over them.
 * `listener` is rolegate's number for the listener (several addresses share it when the
 * listener binds a wildcard). */
struct route {
	__u32 listener;
	__u32 count;
	__u32 turn;
	struct addr backends[STEER_MAX_BACKENDS];
};

/* A steered socket: the address its application asked for, where it was sent, and whose. */
struct steered {
	struct addr asked;
	struct addr backend;
	__u32 listener;
};

/* Counter key: one (listener, backend) pair. */
struct pair {
	__u32 listener;
	struct addr backend;
};

/* Listener address -> route. A wildcard listener (0.0.0.0:P, [::]:P) has one entry per local
 * address of the host, written by rolegate, plus one under the unspecified address that
 * loopback destinations (any of 127.0.0.0/8, ::1) fall back to. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct addr);
	__type(value, struct route);
} routes SEC(".maps");

/* Socket cookie -> steered socket. Deleted by the sock_release hook; LRU so that a socket
 * released outside the cgroup's hook (program replaced) cannot fill it for good. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct steered);
} steered SEC(".maps");

/* Connections steered per (listener, backend); rolegate creates the entries it wants. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, struct pair);
	__type(value, __u64);
} steered_total SEC(".maps");

#define MAPPED_PREFIX __builtin_bswap32(0x0000ffff)

/* The one field of the kernel's socket that steering reads (`sk->sk_ipv6only`), declared here
 * rather than taken from vmlinux.h: `preserve_access_index` makes clang emit a CO-RE relocation
 * by name, which the loader resolves against the running kernel's BTF, so neither the build
 * machine's kernel nor the layout of `struct sock_common` matters. `struct sock_common` is the
 * first member of `struct sock`, itself first in `inet_sock`, `inet_connection_sock` and
 * `tcp_sock`: a `tcp_sock` pointer is a `sock_common` pointer. */
struct sock_common {
	unsigned char skc_ipv6only : 1;
} __attribute__((preserve_access_index));

/* `::ffff:a.b.c.d`: an IPv4 address. */
static __always_inline int is_v4(const struct addr *a)
{
	return a->ip6[0] == 0 && a->ip6[1] == 0 && a->ip6[2] == MAPPED_PREFIX;
}

/* The wildcard entry a loopback destination falls back to (`0.0.0.0` or `::`, same port);
 * 0 when `dst` is not a loopback address. Loopback only: every other local address has an
 * entry of its own, and a remote destination never matches a wildcard listener. */
static __always_inline int wildcard(const struct addr *dst, struct addr *any)
{
	any->ip6[0] = 0;
	any->ip6[1] = 0;
	any->ip6[3] = 0;
	any->port = dst->port;
	if (is_v4(dst)) {
		any->ip6[2] = MAPPED_PREFIX;
		return (dst->ip6[3] & __builtin_bswap32(0xff000000)) == __builtin_bswap32(0x7f000000);
	}
	any->ip6[2] = 0;
	return dst->ip6[0] == 0 && dst->ip6[1] == 0 && dst->ip6[2] == 0 &&
	       dst->ip6[3] == __builtin_bswap32(1);
}

/* Which sockets a hook steers to which backends. */
enum family {
	/* connect4: an AF_INET socket, which cannot be given an IPv6 destination. */
	SOCKET_V4,
	/* connect6, the kernel's socket readable (`steer_connect6`): an IPv6 destination goes to
	 * an IPv4 backend unless the socket is IPv6-only. */
	SOCKET_V6,
	/* connect6 where that bit cannot be read (`steer_connect6_unmapped`): an IPv6 destination
	 * never goes to an IPv4 backend. */
	SOCKET_V6_UNMAPPED,
};

/* Whether an AF_INET6 TCP socket may connect to an IPv4-mapped address: not when it set
 * IPV6_V6ONLY, or was created with it by `net.ipv6.bindv6only=1` (the kernel's `connect` then
 * fails with ENETUNREACH). This is the very bit `tcp_v6_connect` tests, read at connect time,
 * so setsockopt, the sysctl of the socket's own netns and later changes of either all count.
 * `bpf_getsockopt` cannot tell (it serves IPV6_TCLASS and IPV6_AUTOFLOWLABEL only), hence the
 * typed pointer; a socket that is not plain TCP (MPTCP) counts as IPv6-only. */
static __always_inline int reaches_mapped(struct bpf_sock_addr *ctx)
{
	const struct sock_common *sk = (const void *)bpf_skc_to_tcp_sock(ctx->sk);
	if (!sk)
		return 0;
	return !BPF_CORE_READ_BITFIELD(sk, skc_ipv6only);
}

/* Chooses the backend for a TCP connect to `dst` and records the socket; 0 when the connect
 * is to be left alone (not a steered listener, nothing routable, a backend the socket's family
 * cannot reach, the socket not recordable). */
static __always_inline int steer(struct bpf_sock_addr *ctx, const struct addr *dst,
				 enum family family, struct addr *backend)
{
	struct route *route = bpf_map_lookup_elem(&routes, dst);
	if (!route) {
		struct addr any;
		if (!wildcard(dst, &any))
			return 0;
		route = bpf_map_lookup_elem(&routes, &any);
		if (!route)
			return 0;
	}
	__u32 count = route->count;
	if (count == 0 || count > STEER_MAX_BACKENDS)
		return 0;
	struct steered s = { .asked = *dst, .listener = route->listener };
	/* The one backend of a primary route at a constant offset, one of several at a variable
	 * one, in two separate copies: without CAP_PERFMON the verifier's Spectre v1 sanitation
	 * rejects a pointer addition reached with a constant offset on one path and a variable
	 * one on another ("pointer arithmetic ... prohibited for !root"). */
	if (count == 1) {
		s.backend = route->backends[0];
	} else {
		__u32 idx = __sync_fetch_and_add(&route->turn, 1) % count;
		/* clang proves idx < count <= STEER_MAX_BACKENDS and drops the check the verifier
		 * needs; the empty asm hides the value from it. */
		asm volatile("" : "+r"(idx));
		if (idx >= STEER_MAX_BACKENDS)
			return 0;
		s.backend = route->backends[idx];
	}
	/* A backend the socket cannot reach: the proxy takes this one. An AF_INET socket cannot
	 * connect to an IPv6 backend; an AF_INET6 one that asked for an IPv6 address reaches an
	 * IPv4 backend by its mapped address only if it is not IPv6-only (one asking for a mapped
	 * address is not, or its connect fails with or without steering). */
	if (family == SOCKET_V4) {
		if (!is_v4(&s.backend))
			return 0;
	} else if (is_v4(&s.backend) && !is_v4(dst)) {
		if (family == SOCKET_V6_UNMAPPED || !reaches_mapped(ctx))
			return 0;
	}
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&steered, &cookie, &s, BPF_ANY) != 0)
		return 0; /* untracked sockets could not be fenced: let the proxy take it */
	struct pair pair = { .listener = s.listener, .backend = s.backend };
	__u64 *total = bpf_map_lookup_elem(&steered_total, &pair);
	if (total)
		__sync_fetch_and_add(total, 1);
	*backend = s.backend;
	return 1;
}

SEC("cgroup/connect4")
int steer_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return 1;
	struct addr dst = { .ip6 = { 0, 0, MAPPED_PREFIX, ctx->user_ip4 }, .port = ctx->user_port };
	struct addr backend;
	if (steer(ctx, &dst, SOCKET_V4, &backend)) {
		ctx->user_ip4 = backend.ip6[3];
		ctx->user_port = backend.port;
	}
	return 1;
}

/* AF_INET6 sockets: native IPv6 destinations, and IPv4 ones by their mapped address
 * (dual-stack clients). An IPv4 backend is written mapped, which the kernel connects as IPv4
 * (an IPv6-only socket is left to the proxy: see `reaches_mapped`). */
static __always_inline int connect6(struct bpf_sock_addr *ctx, enum family family)
{
	if (ctx->type != SOCK_STREAM)
		return 1;
	struct addr dst = {
		.ip6 = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] },
		.port = ctx->user_port,
	};
	struct addr backend;
	if (steer(ctx, &dst, family, &backend)) {
		ctx->user_ip6[0] = backend.ip6[0];
		ctx->user_ip6[1] = backend.ip6[1];
		ctx->user_ip6[2] = backend.ip6[2];
		ctx->user_ip6[3] = backend.ip6[3];
		ctx->user_port = backend.port;
	}
	return 1;
}

/* rolegate attaches one of the two: this one needs the kernel's BTF (CO-RE) and CAP_PERFMON
 * (the typed socket pointer); without them the verifier rejects it and `_unmapped` serves. */
SEC("cgroup/connect6")
int steer_connect6(struct bpf_sock_addr *ctx)
{
	return connect6(ctx, SOCKET_V6);
}

SEC("cgroup/connect6")
int steer_connect6_unmapped(struct bpf_sock_addr *ctx)
{
	return connect6(ctx, SOCKET_V6_UNMAPPED);
}

/* The application sees the address it connected to, as with the proxy. */
SEC("cgroup/getpeername4")
int steer_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct steered *s = bpf_map_lookup_elem(&steered, &cookie);
	if (!s || !is_v4(&s->backend) || !is_v4(&s->asked))
		return 1;
	if (ctx->user_ip4 == s->backend.ip6[3] && ctx->user_port == s->backend.port) {
		ctx->user_ip4 = s->asked.ip6[3];
		ctx->user_port = s->asked.port;
	}
	return 1;
}

SEC("cgroup/getpeername6")
int steer_getpeername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct steered *s = bpf_map_lookup_elem(&steered, &cookie);
	if (!s)
		return 1;
	if (ctx->user_ip6[0] == s->backend.ip6[0] && ctx->user_ip6[1] == s->backend.ip6[1] &&
	    ctx->user_ip6[2] == s->backend.ip6[2] && ctx->user_ip6[3] == s->backend.ip6[3] &&
	    ctx->user_port == s->backend.port) {
		ctx->user_ip6[0] = s->asked.ip6[0];
		ctx->user_ip6[1] = s->asked.ip6[1];
		ctx->user_ip6[2] = s->asked.ip6[2];
		ctx->user_ip6[3] = s->asked.ip6[3];
		ctx->user_port = s->asked.port;
	}
	return 1;
}

/* A closed socket is no longer steered: keeps `steered` equal to the live sessions. */
SEC("cgroup/sock_release")
int steer_sock_release(struct bpf_sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	bpf_map_delete_elem(&steered, &cookie);
	return 1;
}

char _license[] SEC("license") = "Dual BSD/GPL";
