// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// rolegate steering: cgroup socket-address hooks that send a local client's TCP connect()
// to a listener's bind address straight to the backend the routing table names, so the bytes
// flow client -> database without the proxy. rolegate (src/data_plane/steer) writes `routes`
// from the same step that stores a new routing table; an absent entry means "leave the
// destination alone", so the connection reaches rolegate's own listener (queue, refusal).
//
// Built by build.rs with `clang -target bpf -O2 -g` against the uapi headers and libbpf's
// bpf_helpers.h only (no vmlinux.h), so the object does not depend on the build machine's
// kernel. Addresses and ports are kept exactly as the hooks see them (network byte order).
// IPv4 listeners only; `connect6` covers clients that reach them with an IPv4-mapped address
// on an AF_INET6 socket (the backend is then written mapped too).

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define SOCK_STREAM 1
/* Candidates per steered listener; rolegate writes at most this many. */
#define STEER_MAX_BACKENDS 8

/* A listener's bind address or a backend's address, as `user_ip4`/`user_port` hold them. */
struct addr4 {
	__u32 ip4;
	__u32 port;
};

/* Where connects to one listener go now: `count` backends, round robin over them. */
struct route4 {
	__u32 count;
	__u32 turn;
	struct addr4 backends[STEER_MAX_BACKENDS];
};

/* A steered socket: the address its application asked for and where it was sent. */
struct steered4 {
	struct addr4 listener;
	struct addr4 backend;
};

/* Counter key: one (listener, backend) pair. */
struct pair4 {
	struct addr4 listener;
	struct addr4 backend;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct addr4);
	__type(value, struct route4);
} routes4 SEC(".maps");

/* Socket cookie -> steered socket. Deleted by the sock_release hook; LRU so that a socket
 * released outside the cgroup's hook (program replaced) cannot fill it for good. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct steered4);
} steered4 SEC(".maps");

/* Connections steered per (listener, backend); rolegate creates the entries it wants. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, struct pair4);
	__type(value, __u64);
} steered_total SEC(".maps");

/* Chooses the backend for a TCP connect to `dst` and records the socket; 0 when the connect
 * is to be left alone (not a steered listener, nothing routable, the socket not recordable). */
static __always_inline int steer(struct bpf_sock_addr *ctx, struct addr4 dst, struct addr4 *backend)
{
	struct route4 *route = bpf_map_lookup_elem(&routes4, &dst);
	if (!route)
		return 0;
	__u32 count = route->count;
	if (count == 0 || count > STEER_MAX_BACKENDS)
		return 0;
	__u32 idx = 0;
	if (count > 1)
		idx = __sync_fetch_and_add(&route->turn, 1) % count;
	/* clang proves idx < count <= STEER_MAX_BACKENDS and drops the check the verifier needs;
	 * the empty asm hides the value from it. */
	asm volatile("" : "+r"(idx));
	if (idx >= STEER_MAX_BACKENDS)
		return 0;
	struct steered4 s = { .listener = dst, .backend = route->backends[idx] };
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&steered4, &cookie, &s, BPF_ANY) != 0)
		return 0; /* untracked sockets could not be fenced: let the proxy take it */
	struct pair4 pair = { .listener = dst, .backend = s.backend };
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
	struct addr4 dst = { .ip4 = ctx->user_ip4, .port = ctx->user_port };
	struct addr4 backend;
	if (steer(ctx, dst, &backend)) {
		ctx->user_ip4 = backend.ip4;
		ctx->user_port = backend.port;
	}
	return 1;
}

/* `::ffff:a.b.c.d`: an IPv4 address on an AF_INET6 socket (dual-stack clients, e.g. Java). */
static __always_inline int v4_mapped(struct bpf_sock_addr *ctx)
{
	return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 &&
	       ctx->user_ip6[2] == __builtin_bswap32(0x0000ffff);
}

/* IPv4 listeners reached through an IPv4-mapped address on an IPv6 socket. */
SEC("cgroup/connect6")
int steer_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM || !v4_mapped(ctx))
		return 1;
	struct addr4 dst = { .ip4 = ctx->user_ip6[3], .port = ctx->user_port };
	struct addr4 backend;
	if (steer(ctx, dst, &backend)) {
		ctx->user_ip6[3] = backend.ip4;
		ctx->user_port = backend.port;
	}
	return 1;
}

/* The application sees the address it connected to, as with the proxy. */
SEC("cgroup/getpeername4")
int steer_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct steered4 *s = bpf_map_lookup_elem(&steered4, &cookie);
	if (!s)
		return 1;
	if (ctx->user_ip4 == s->backend.ip4 && ctx->user_port == s->backend.port) {
		ctx->user_ip4 = s->listener.ip4;
		ctx->user_port = s->listener.port;
	}
	return 1;
}

SEC("cgroup/getpeername6")
int steer_getpeername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct steered4 *s = bpf_map_lookup_elem(&steered4, &cookie);
	if (!s || !v4_mapped(ctx))
		return 1;
	if (ctx->user_ip6[3] == s->backend.ip4 && ctx->user_port == s->backend.port) {
		ctx->user_ip6[3] = s->listener.ip4;
		ctx->user_port = s->listener.port;
	}
	return 1;
}

/* A closed socket is no longer steered: keeps `steered4` equal to the live sessions. */
SEC("cgroup/sock_release")
int steer_sock_release(struct bpf_sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	bpf_map_delete_elem(&steered4, &cookie);
	return 1;
}

char _license[] SEC("license") = "Dual BSD/GPL";
