// Copyright 2026 The gatekeeper authors. Tests of GATEKEEPER PATCH 21
// (Lost).

package ssh

import (
	"testing"
)

// endOf waits until ch's requests have ended (within 10 s), the moment an
// owner learns that the channel is closed.
func endOf(t *testing.T, ch *channel) {
	t.Helper()
	within(t, "the channel's requests ending", func() {
		for range ch.incomingRequests {
		}
	})
}

// TestLost: a channel its peer closed is not Lost, one whose connection
// ended while it was open is, on both ends; a channel whose peer's CLOSE
// came before the connection ended, waiting for its owner to answer
// (OwnerAnswersClose), is not.
func TestLost(t *testing.T) {
	t.Run("closed by the peer", func(t *testing.T) {
		accepted, opened, openerMux := channelPair(t)
		defer openerMux.Close()
		defer accepted.mux.Close()
		if err := accepted.Close(); err != nil {
			t.Fatal(err)
		}
		endOf(t, opened)
		if opened.Lost() {
			t.Error("Lost after the peer's CLOSE")
		}
		openerMux.Close()
		if opened.Lost() {
			t.Error("Lost after the peer's CLOSE and the connection's end")
		}
	})
	t.Run("connection ended", func(t *testing.T) {
		accepted, opened, openerMux := channelPair(t)
		defer openerMux.Close()
		if err := accepted.mux.Close(); err != nil {
			t.Fatal(err)
		}
		endOf(t, opened)
		if !opened.Lost() {
			t.Error("the peer's end: not Lost after its connection ended")
		}
		endOf(t, accepted)
		if !accepted.Lost() {
			t.Error("the closing end: not Lost after its connection's Close")
		}
	})
	t.Run("peer CLOSE waiting for the owner", func(t *testing.T) {
		opener, acceptor, opened, accepted, reqs := ownerClosePair(t)
		if err := opened.Close(); err != nil {
			t.Fatal(err)
		}
		within(t, "the accepted end's requests ending", func() {
			for range reqs {
			}
		})
		opener.Close()
		within(t, "the acceptor's connection ending", func() { _ = acceptor.Wait() })
		if accepted.Lost() {
			t.Error("Lost although the peer's CLOSE came before the connection ended")
		}
	})
}
