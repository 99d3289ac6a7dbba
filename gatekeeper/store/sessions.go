package store

import "time"

// LiveSession is one live proxied SSH session as the session registry of a
// cluster keeps it (see etcd.Sessions): which node holds it, its number there,
// and who it is. Numbers are per node, so Node and ID together name a session
// in the cluster.
type LiveSession struct {
	Node    string    `json:"node"`
	ID      uint64    `json:"id"`
	User    string    `json:"user"`
	Remote  string    `json:"remote"`
	Trusted bool      `json:"trusted"`
	Start   time.Time `json:"start"`
	// Key is the fingerprint of the registered SSH key the session logged
	// in with (empty: a password login).
	Key string `json:"key,omitempty"`
}

// KillRequest asks a node to end sessions: the one with ID (User empty),
// every session of User (a reset or a replaced phone on node By), or, with
// Key set, User's sessions that logged in with that key (a revoked key).
type KillRequest struct {
	ID   uint64 `json:"id,omitempty"`
	User string `json:"user,omitempty"`
	Key  string `json:"key,omitempty"`
	// By is the node that asked.
	By string `json:"by"`
}
