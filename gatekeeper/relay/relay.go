// Package relay bridges an authenticated client SSH connection to the lander's
// sshd: every channel, channel request and global request is passed through
// unchanged in both directions, so that ssh, scp, sftp, rsync, git, port
// forwarding, agent and X11 forwarding behave as if the client talked to the
// lander directly.
package relay

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

const (
	// reqQueueLen is how many requests we take off x/crypto's queue (16
	// deep) while an earlier request waits for its reply. x/crypto's read
	// loop blocks, for the whole connection, when its queue is full.
	reqQueueLen = 128

	// drainTimeout bounds how long output the lander sent before it went
	// away may take to reach the client before the client is cut off.
	drainTimeout = 10 * time.Second
)

// DefaultMaxChannels is the cap on channels open at once in each direction
// of one connection when Options.MaxChannels is not set (config key
// max_channels). Jupyter and Dask dashboards, and browsers through ssh -D,
// open many forwarded connections at once (a browser up to 256); OpenSSH's
// sshd has no cap of its own below thousands.
const DefaultMaxChannels = 256

// tooManyChannels is what a peer is told when it opens a channel beyond the
// cap; it names no internals.
const tooManyChannels = "too many channels open on this connection"

// Global request types with special treatment.
const (
	reqNoMoreSess  = "no-more-sessions@openssh.com"
	reqHostkeys    = "hostkeys-00@openssh.com"
	reqHostkeysPrv = "hostkeys-prove-00@openssh.com"
)

// DefaultWindow is the receive window x/crypto (and OpenSSH) offer for a
// channel: 2 MiB.
const DefaultWindow = 2 << 20

// maxWindow is the largest Options.Window used (config.Validate refuses
// more); a larger one is ignored.
const maxWindow = 64 << 20

// windowRate is the rate, in bytes per second, a client's receive windows
// are sized for: Relay offers the client's round trip (as its handshake
// showed it) times windowRate, at least DefaultWindow and at most
// Options.Window. A window smaller than the path's bandwidth-delay product
// caps a transfer below the path's speed; a larger one only lets the
// client's ssh queue more: with 16 MiB on loopback, OpenSSH's client
// spent twice its CPU on its growing send buffer and rsync's pipeline
// stalled (rsync through the gatekeeper at 0.60-0.68x direct against
// 0.83x with 2 MiB). 1 GiB/s is above what one SSH stream moves, so a
// window sized so never caps one.
const windowRate = 1 << 30

// windowFor returns the receive window for a client rtt away: rtt ×
// windowRate between DefaultWindow and max; max when rtt is unknown (0).
func windowFor(rtt time.Duration, max uint32) uint32 {
	if max <= DefaultWindow || rtt <= 0 {
		return max
	}
	w := rtt.Seconds() * windowRate
	switch {
	case w <= DefaultWindow:
		return DefaultWindow
	case w >= float64(max):
		return max
	}
	return uint32(w)
}

// maxBigWindowsPerConn is how many channels of one connection may have a
// window above DefaultWindow at once: a transfer or two with room to spare,
// while a client opening max_channels channels cannot claim them all.
const maxBigWindowsPerConn = 4

// WindowBudget bounds the memory that receive windows above DefaultWindow
// may hold across all connections of a node: a client may send a whole
// window ahead of what the lander has taken, and the gatekeeper holds it
// until then. Share one among every Relay of a node. Its methods are safe
// for concurrent use.
type WindowBudget struct {
	mu   sync.Mutex
	left int64
}

// NewWindowBudget returns a budget of total bytes.
func NewWindowBudget(total int64) *WindowBudget { return &WindowBudget{left: total} }

// take reserves n bytes, reporting false (reserving nothing) when fewer
// are left.
func (b *WindowBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.left < n {
		return false
	}
	b.left -= n
	return true
}

// give returns n bytes reserved by take.
func (b *WindowBudget) give(n int64) {
	b.mu.Lock()
	b.left += n
	b.mu.Unlock()
}

// windowAccepter is the x/crypto NewChannel with AcceptWithWindow (patch 3
// in third_party/golang.org/x/crypto/PATCHES.md).
type windowAccepter interface {
	AcceptWithWindow(size uint32) (ssh.Channel, <-chan *ssh.Request, error)
}

// Stats counts channel payload bytes (data and extended data such as
// stderr) relayed in each direction. Several relays may share one Stats.
type Stats struct {
	Up   atomic.Int64 // client → lander
	Down atomic.Int64 // lander → client
	// LanderFirst is set when the lander's connection ended before the
	// client's (sshd went away, or ended the connection itself), not set
	// when the client's did (the user logged out, or the caller closed
	// it). Final once Relay has returned.
	LanderFirst atomic.Bool
}

// Options tunes a Relay. The zero value is usable.
type Options struct {
	// Log receives channel open/reject/close lines at Debug and
	// unexpected failures at Warn; never payloads. Nil discards.
	Log *slog.Logger
	// Stats, when set, is incremented with relayed payload bytes.
	Stats *Stats
	// MaxChannels caps the channels open at once on the connection, from
	// the moment one side asks for a channel until both sides have closed
	// it: every channel costs goroutines, copy buffers and up to a 2 MiB
	// receive window on each side. A channel opened beyond the cap is
	// refused with ssh.ResourceShortage and its slot is free again once an
	// open channel closes.
	//
	// The client's channels (sessions, -L forwards) and the lander's
	// (forwarded-tcpip for -R, x11, auth-agent) are counted separately,
	// each against its own cap of MaxChannels: anyone on the lander who can
	// connect to a user's -R port must not be able to use up the slots the
	// user needs for new sessions, and the lander is still bounded, so one
	// connection holds at most 2 × MaxChannels channel pairs.
	//
	// Zero or less means DefaultMaxChannels.
	MaxChannels int
	// Window is the largest receive window offered for a channel the
	// client opens (config key relay.window): over a long round trip the
	// window sets the upload speed. Each channel gets the client's round
	// trip times windowRate, within DefaultWindow and Window (see
	// windowFor); one larger than DefaultWindow is given to at most
	// maxBigWindowsPerConn channels of the connection at once and only
	// while Windows has room; other channels get DefaultWindow.
	Window uint32
	// Windows bounds the memory of enlarged windows across connections
	// (relay.window_total). Nil: Window is not used.
	Windows *WindowBudget
	// HostKeys are the gatekeeper's host keys, all of them, announced to
	// the client for OpenSSH's UpdateHostKeys (see hostkeys.go). Nil: none
	// are announced, and the client's requests to prove them are refused.
	HostKeys []ssh.Signer

	// roundTrip, if set, replaces the client's round trip that the
	// handshake showed (x/crypto patch 16): tests size windows with it.
	roundTrip time.Duration
	// peakQueue, if set, records the longest forwarder queue of the
	// relay: tests check that pausing bounds them.
	peakQueue *atomic.Int64
	// linger, if set, replaces copyLinger: tests make copies end and
	// start again all the time.
	linger time.Duration
}

// side names the connection a channel or request came from.
type side int

const (
	fromClient side = iota
	fromLander
)

func (s side) String() string {
	if s == fromClient {
		return "client"
	}
	return "lander"
}

// relay is the state of one Relay call.
type relay struct {
	down, up ssh.Conn
	log      *slog.Logger
	stats    *Stats

	// wg tracks every goroutine Relay starts, directly or indirectly.
	wg sync.WaitGroup
	// ending is closed when teardown starts; failures after that are
	// expected and logged at Debug only.
	ending chan struct{}

	// maxChannels is the cap on open[side].
	maxChannels int
	// window is the receive window for the client's channels (windowFor
	// Options.Window); windows is Options.Windows.
	window  uint32
	windows *WindowBudget
	// peakQueue is Options.peakQueue.
	peakQueue *atomic.Int64
	// linger is how long a copy waits for data before it ends
	// (copyLinger unless Options.linger).
	linger time.Duration
	// hostKeys is Options.HostKeys; proved is set once the client has
	// been answered a request to prove them (see proveHostKeys).
	hostKeys []ssh.Signer
	proved   atomic.Bool

	mu sync.Mutex
	// open counts the channel pairs being opened or running, by the side
	// that opened them.
	open [2]int
	// lost counts the pairs in open whose lander channel went with the
	// lander's connection and whose output the client has had (see
	// half.forward): the drain does not wait for them to end.
	lost int
	// refused counts the channel opens refused over the cap, by side.
	refused [2]int
	// idle is closed when no pair is left but lost ones, if set.
	idle chan struct{}
	// bigWindows counts the channels open with a window above
	// DefaultWindow.
	bigWindows int

	// drain is run's, kept here rather than in run's frame (see run).
	drain drain
}

// Relay pumps everything between the client's connection (down, with its
// channel and request queues) and the lander's (up, from ssh.NewClientConn)
// until either ends, then closes both. It blocks until done and leaves no
// goroutine behind. opts may be nil (the defaults); it is a pointer because
// the caller's goroutine waits in Relay for the session's life, and its stack
// halves back to 4 KiB only while its frames take under about 1.2 KiB (see
// the README's idle-session notes): 64 bytes of arguments count.
//
// When the client goes, the lander connection is closed at once. When the
// lander goes, output it sent before (data, exit status, channel close) is
// still delivered to the client, for at most drainTimeout, before the client
// connection is closed; a channel the lander had not closed stays open
// until then, so that the client sees its connection end, as directly.
//
// Relay returns nil when the connection that ended first ended normally (EOF,
// a peer's "by application" disconnect, or closed by the caller), otherwise
// the error that ended it, naming the side.
//
// Goroutines, since an idle session's memory is mostly their stacks: the
// caller's, in Relay, takes both connections' channel opens and global
// requests and notices their end (see run); that is all an idle session
// has. A channel pair runs a goroutine only while it has work (see pair):
// one per direction while data flows (data and stderr through one,
// x/crypto patch 6), one for a moment when a request, an EOF or a close
// arrives (x/crypto patch 7 tells). Anything that may wait on a peer (a
// reply, a refusal) runs in a forwarder, whose goroutine exists only while
// it has work.
func Relay(down *ssh.ServerConn, downChans <-chan ssh.NewChannel, downReqs <-chan *ssh.Request,
	up ssh.Conn, upChans <-chan ssh.NewChannel, upReqs <-chan *ssh.Request, opts *Options) error {
	if opts == nil {
		opts = new(Options)
	}
	r := &relay{
		down:        down,
		up:          up,
		log:         opts.Log,
		stats:       opts.Stats,
		ending:      make(chan struct{}),
		maxChannels: opts.MaxChannels,
		window:      opts.Window,
		windows:     opts.Windows,
		peakQueue:   opts.peakQueue,
		linger:      opts.linger,
		hostKeys:    opts.HostKeys,
	}
	if r.linger <= 0 {
		r.linger = copyLinger
	}
	if r.maxChannels <= 0 {
		r.maxChannels = DefaultMaxChannels
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.sizeWindow(down, opts.roundTrip)
	closeAfterLander(down)
	if r.stats == nil {
		r.stats = new(Stats)
	}
	r.announceHostKeys()
	err := r.run(r.endpoint(fromClient, downChans, downReqs), r.endpoint(fromLander, upChans, upReqs))
	r.logRefused()
	return err
}

// ClientRTT returns the round trip to the client of sc as its handshake
// showed it (x/crypto patch 16, HandshakeRTT), or 0 when unknown.
func ClientRTT(sc *ssh.ServerConn) time.Duration {
	if rt, ok := sc.Conn.(interface{ HandshakeRTT() time.Duration }); ok {
		return rt.HandshakeRTT()
	}
	return 0
}

// sizeWindow sets r.window, Options.Window so far, for the round trip to
// the client of down: roundTrip if set, else what its handshake showed
// (x/crypto patch 16). Not inlined: Relay's frame stays on the stack for the session's
// whole life (see run), and this one's would have kept its goroutine's
// stack at 8 KiB.
//
//go:noinline
func (r *relay) sizeWindow(down *ssh.ServerConn, roundTrip time.Duration) {
	if r.window <= DefaultWindow || r.window > maxWindow {
		return
	}
	rtt := roundTrip
	if rtt == 0 {
		rtt = ClientRTT(down)
	}
	r.window = windowFor(rtt, r.window)
	r.log.Debug("client receive window", "rtt", rtt, "window", r.window)
}

// closeAfterLander makes the client's CLOSE of a channel wait for its answer
// until the lander's CLOSE is relayed (x/crypto patch 20): sshd sends a
// command's exit status after the client's CLOSE when the client closed
// first (OpenSSH's ControlMaster does, once its input is done and the
// command's EOF came), and x/crypto, answering at once, closed the channel
// before that status could reach the client. Not inlined, as sizeWindow.
//
//go:noinline
func closeAfterLander(down *ssh.ServerConn) {
	if oc, ok := down.Conn.(interface{ OwnerAnswersClose() }); ok {
		oc.OwnerAnswersClose()
	}
}

// endpoint is one connection as run sees it.
type endpoint struct {
	from side
	// chans and reqs are x/crypto's queues, nil once it has closed them:
	// then the connection has ended.
	chans <-chan ssh.NewChannel
	reqs  <-chan *ssh.Request
	// fw answers, forwards or refuses what the connection sends, in
	// order. While its queue is full, run takes nothing more from this
	// connection (paused) until fw.room.
	fw     *forwarder
	paused bool
	// ended is set once run has seen both queues closed.
	ended bool
}

// endpoint returns the endpoint of from's connection. Not inlined: Relay's
// frame stays on the stack for the session's whole life (see run).
//
//go:noinline
func (r *relay) endpoint(from side, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) *endpoint {
	e := &endpoint{from: from, chans: chans, reqs: reqs}
	e.fw = newForwarder(func(it item) {
		if it.nc != nil {
			if err := it.nc.Reject(ssh.ResourceShortage, tooManyChannels); err != nil {
				r.log.Debug("channel reject not sent", "err", err)
			}
			return
		}
		r.global(it.req, from)
	}, r.wg.Go, nil, r.peakQueue)
	return e
}

// queues returns what run reads from e: nothing while e is paused.
func (e *endpoint) queues() (<-chan ssh.NewChannel, <-chan *ssh.Request) {
	if e.paused {
		return nil, nil
	}
	return e.chans, e.reqs
}

// push hands it to e's forwarder, pausing e when that fills its queue.
func (e *endpoint) push(it item) {
	if e.fw.push(it) {
		e.paused = true
	}
}

// run serves both connections until both have ended, in one goroutine:
// their channel opens (each bridged in a goroutine of its own, up to
// maxChannels open at once; one over the cap is refused), their global
// requests (answered locally, dropped or forwarded, see global), and the
// end of each. x/crypto's queues are always read, since its mux loop,
// which also reads the connection (x/crypto patch 19), blocks, for the
// whole connection, when one is full: nothing run does waits on a peer. It returns Relay's result.
//
// run waits here for the whole of an idle session, so it keeps its own
// frame small and leaves the rest to methods: the runtime halves an idle
// goroutine's stack only while less than a quarter of it is in use (see
// handleConn in package gatekeeper for the margin).
func (r *relay) run(down, up *endpoint) error {
	d := &r.drain
	for !down.ended || !up.ended {
		downChans, downReqs := down.queues()
		upChans, upReqs := up.queues()
		select {
		case nc, ok := <-downChans:
			r.channelOpen(down, nc, ok)
		case req, ok := <-downReqs:
			r.globalRequest(down, req, ok)
		case <-down.fw.room:
			down.paused = false
		case nc, ok := <-upChans:
			r.channelOpen(up, nc, ok)
		case req, ok := <-upReqs:
			r.globalRequest(up, req, ok)
		case <-up.fw.room:
			up.paused = false
		case <-d.idle:
			r.drained(d, false)
		case <-d.timeout:
			r.drained(d, true)
		}
		r.checkEnded(d, down, up)
	}
	d.stop()
	_ = r.down.Close()
	_ = r.up.Close()
	down.fw.wait()
	up.fw.wait()
	r.wg.Wait()
	return d.err
}

// drain is run's state while the client gets the lander's last output:
// idle is closed once no pair is left, timeout fires after drainTimeout.
// err is Relay's result, set by the side that ends first.
type drain struct {
	idle    <-chan struct{}
	timer   *time.Timer
	timeout <-chan time.Time
	err     error
}

// stop ends the drain, if one runs.
func (d *drain) stop() {
	if d.timer != nil {
		d.timer.Stop()
	}
	d.idle, d.timeout = nil, nil
}

// drained ends the client's connection once the drain is over: every pair
// has ended but lost ones, or the client took too long (timedOut). With
// lost pairs, whose channels stay open, the client is sent a FIN after
// their output and closes its end itself, within the drain's time: a Close
// now, with the client's last window adjustments unread, would make the
// kernel reset the connection and lose output still on its way.
func (r *relay) drained(d *drain, timedOut bool) {
	if timedOut {
		r.log.Warn("client did not take the lander's last output in time; closing", "timeout", drainTimeout)
	} else if r.anyLost() && closeWrite(r.down) == nil {
		d.idle = nil
		return
	}
	d.stop()
	_ = r.down.Close()
}

// anyLost reports whether a lost pair is left (see pairLost).
func (r *relay) anyLost() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lost > 0
}

// closeWrite shuts down the writing half of c's connection (x/crypto patch
// 21), or returns errors.ErrUnsupported.
func closeWrite(c ssh.Conn) error {
	if cw, ok := innerConn(c).(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// checkEnded notes a connection whose queues have both closed: the first
// to end sets Relay's result and ends the other one, at once when the
// client went, after the drain when the lander did.
func (r *relay) checkEnded(d *drain, down, up *endpoint) {
	if !down.ended && down.chans == nil && down.reqs == nil {
		// Both queues are closed, so Wait returns at once.
		down.ended = true
		e := r.down.Wait()
		r.log.Debug("connection ended", "side", fromClient.String(), "err", e)
		if !up.ended {
			close(r.ending)
			d.err = endErr(fromClient, e)
			_ = r.up.Close()
		}
		d.stop()
	}
	if !up.ended && up.chans == nil && up.reqs == nil {
		up.ended = true
		e := r.up.Wait()
		r.log.Debug("connection ended", "side", fromLander.String(), "err", e)
		if !down.ended {
			// The client still gets what the lander sent
			// before it went, for at most drainTimeout.
			r.stats.LanderFirst.Store(true)
			close(r.ending)
			d.err = endErr(fromLander, e)
			d.idle = r.idleChan()
			d.timer = time.NewTimer(drainTimeout)
			d.timeout = d.timer.C
		}
	}
}

// channelOpen handles a channel open from e (ok false: its queue closed).
func (r *relay) channelOpen(e *endpoint, nc ssh.NewChannel, ok bool) {
	if !ok {
		e.chans = nil
		return
	}
	if !r.pairStart(e.from) {
		r.logRefusal(nc, e.from)
		// The reject is a write, which may wait on the peer. It
		// waits in e's forwarder behind e's global requests still
		// unanswered, which is fine: a peer over the cap is in no
		// hurry to be told, and a refusal must not cost a goroutine.
		e.push(item{nc: nc})
		return
	}
	// A goroutine while the channel opens: opening its counterpart
	// waits for the other side's answer.
	r.wg.Go(func() {
		if p := r.bridge(nc, e.from); p != nil {
			p.start()
		} else {
			r.pairDone(e.from, false)
		}
	})
}

// globalRequest handles a global request from e (ok false: its queue
// closed).
//
// Not inlined: run waits for a session's whole life, and its frame is kept
// small (see run).
//
//go:noinline
func (r *relay) globalRequest(e *endpoint, req *ssh.Request, ok bool) {
	if !ok {
		e.reqs = nil
		return
	}
	e.push(item{req: req})
}

// endErr turns the error a connection's Wait returned into Relay's result.
func endErr(s side, err error) error {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		// x/crypto's disconnectMsg is unexported; reason 11 is
		// SSH_DISCONNECT_BY_APPLICATION, what OpenSSH's ssh sends on exit.
		strings.HasPrefix(err.Error(), "ssh: disconnect, reason 11:") {
		return nil
	}
	return fmt.Errorf("relay: %s connection: %w", s, err)
}

// idleChan returns a channel that is closed once no channel pair is left
// but lost ones (at once if none is).
func (r *relay) idleChan() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	idle := make(chan struct{})
	r.idle = idle
	r.checkIdle()
	return idle
}

// checkIdle closes r.idle, if set, when no pair is left but lost ones.
// r.mu is held.
func (r *relay) checkIdle() {
	if r.open[fromClient]+r.open[fromLander] == r.lost && r.idle != nil {
		close(r.idle)
		r.idle = nil
	}
}

// pairStart takes a channel slot for a channel opened by from; it reports
// false, taking nothing, when from already has maxChannels open.
func (r *relay) pairStart(from side) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open[from] >= r.maxChannels {
		r.refused[from]++
		return false
	}
	r.open[from]++
	return true
}

// pairDone gives back a slot taken by pairStart; lost tells whether
// pairLost counted the pair.
func (r *relay) pairDone(from side, lost bool) {
	r.mu.Lock()
	r.open[from]--
	if lost {
		r.lost--
	}
	r.checkIdle()
	r.mu.Unlock()
}

// pairLost counts a pair whose lander channel went with the lander's
// connection, once the client has had its output.
func (r *relay) pairLost() {
	r.mu.Lock()
	r.lost++
	r.checkIdle()
	r.mu.Unlock()
}

// logRefusal logs a channel open refused over the cap. The first refusal
// per side is logged at Warn (a client script gone wrong, or someone
// probing); the rest only at Debug, so that a peer cannot flood the log with
// cheap opens, and Relay logs their number when it ends.
func (r *relay) logRefusal(nc ssh.NewChannel, from side) {
	r.mu.Lock()
	first := r.refused[from] == 1
	r.mu.Unlock()
	log := r.log.Debug
	if first {
		log = r.log.Warn
	}
	log("channel refused: "+tooManyChannels, "type", nc.ChannelType(), "from", from.String(),
		"max_channels", r.maxChannels)
}

// logRefused reports, once the connection is over, how many channel opens
// were refused over the cap, if any.
func (r *relay) logRefused() {
	r.mu.Lock()
	byClient, byLander := r.refused[fromClient], r.refused[fromLander]
	r.mu.Unlock()
	if byClient+byLander > 0 {
		r.log.Info("channel opens refused over max_channels", "from_client", byClient,
			"from_lander", byLander, "max_channels", r.maxChannels)
	}
}

// warn logs an unexpected failure, or at Debug once teardown has begun,
// when failures are the normal consequence of closing.
func (r *relay) warn(log *slog.Logger, msg string, args ...any) {
	select {
	case <-r.ending:
		log.Debug(msg, args...)
	default:
		log.Warn(msg, args...)
	}
}

// bridge opens the counterpart of nc on the other connection, accepts nc
// and returns the pair of channels, running (see pair), or nil when either
// failed: then nc is refused or both are closed.
func (r *relay) bridge(nc ssh.NewChannel, from side) *pair {
	target := r.up
	if from == fromLander {
		target = r.down
	}
	log := r.log.With("type", nc.ChannelType(), "from", from.String())

	out, outReqs, err := target.OpenChannel(nc.ChannelType(), nc.ExtraData())
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			log.Debug("channel rejected", "reason", oce.Reason.String(), "message", oce.Message)
			if err := nc.Reject(oce.Reason, oce.Message); err != nil {
				log.Debug("channel reject not sent", "err", err)
			}
			return nil
		}
		r.warn(log, "channel open failed", "err", err)
		if err := nc.Reject(ssh.ConnectionFailed, "open failed"); err != nil {
			log.Debug("channel reject not sent", "err", err)
		}
		return nil
	}
	// The client's stderr is dropped, as OpenSSH's sshd drops it: nobody
	// reads it, and relaying it would cost a buffer per channel. Set
	// before the accept, so that none arrives before it holds.
	discardStderr := func(ch any) {
		if d, ok := ch.(interface{ DiscardStderr() }); ok {
			d.DiscardStderr()
		}
	}
	if from == fromClient {
		discardStderr(nc)
	} else {
		discardStderr(out)
	}
	in, inReqs, window, release, err := r.accept(nc, from)
	if err != nil {
		release()
		r.warn(log, "channel accept failed", "err", err)
		_ = out.Close()
		// Keep reading the closed channel's requests until x/crypto
		// closes the queue, or its mux loop could block on it.
		ssh.DiscardRequests(outReqs)
		return nil
	}
	downCh, downReqs, upCh, upReqs := in, inReqs, out, outReqs
	if from == fromLander {
		downCh, downReqs, upCh, upReqs = out, outReqs, in, inReqs
	}
	down, okDown := downCh.(notifyChannel)
	up, okUp := upCh.(notifyChannel)
	if !okDown || !okUp {
		// Only channels of the in-tree x/crypto reach here.
		release()
		log.Error("channel without x/crypto patch 7 (SetNotify); closed")
		_ = in.Close()
		_ = out.Close()
		r.wg.Go(func() { ssh.DiscardRequests(inReqs) })
		ssh.DiscardRequests(outReqs)
		return nil
	}
	log.Debug("channel open", "window", window)
	p := &pair{r: r, chanType: nc.ChannelType(), from: from, release: release}
	p.up = r.newHalf(p, down, downReqs, up, &r.stats.Up, &p.nUp)
	p.down = r.newHalf(p, up, upReqs, down, &r.stats.Down, &p.nDown)
	p.up.reverse, p.down.reverse = &p.down.inflight, &p.up.inflight
	p.down.parksEnd = true
	return p
}

// accept accepts nc, with the enlarged window when it comes from the client
// and takeWindow grants one, and returns the window it offered. release
// gives the window back; call it once the channel is closed (also after an
// error).
func (r *relay) accept(nc ssh.NewChannel, from side) (ch ssh.Channel, reqs <-chan *ssh.Request, window uint32, release func(), err error) {
	if wa, ok := nc.(windowAccepter); ok && from == fromClient && r.takeWindow() {
		ch, reqs, err = wa.AcceptWithWindow(r.window)
		return ch, reqs, r.window, r.giveWindow, err
	}
	ch, reqs, err = nc.Accept()
	return ch, reqs, DefaultWindow, func() {}, err
}

// takeWindow reserves an enlarged window (Options.Window) if there is one to
// give: the connection has fewer than maxBigWindowsPerConn and the node's
// budget has room. giveWindow returns it.
func (r *relay) takeWindow() bool {
	if r.window <= DefaultWindow || r.window > maxWindow || r.windows == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bigWindows >= maxBigWindowsPerConn || !r.windows.take(int64(r.window)) {
		return false
	}
	r.bigWindows++
	return true
}

// giveWindow returns a window reserved by takeWindow.
func (r *relay) giveWindow() {
	r.windows.give(int64(r.window))
	r.mu.Lock()
	r.bigWindows--
	r.mu.Unlock()
}

// item is one step of a forwarder: a request to forward (or answer), a
// channel open to refuse, or, for a channel half, its EOF or its close.
type item struct {
	req   *ssh.Request
	nc    ssh.NewChannel
	eof   bool
	close bool
}

// forwarder runs fn on each pushed item, one at a time and in order, in a
// goroutine that exists only while items are waiting: requests are rare, and
// an idle channel or connection should not hold a goroutine for them.
type forwarder struct {
	fn func(item)
	// start runs its argument in a new goroutine (a WaitGroup's Go).
	start func(func())
	// room receives when an item is taken from a full queue (reqQueueLen
	// items): the loop that stopped taking work for this forwarder may
	// go on. Made when the queue first fills (nil until then, so that
	// the many forwarders that never fill cost no channel); only the
	// pushing loop reads it, and it pushed when it was made. notify, if
	// set, is called after room is sent.
	room   chan struct{}
	notify func()
	// peak, if set, records the longest queue seen (a probe for tests).
	peak *atomic.Int64

	mu sync.Mutex
	// changed is signalled when the goroutine ends.
	changed sync.Cond
	queue   []item
	busy    bool // the goroutine runs
}

func newForwarder(fn func(item), start func(func()), notify func(), peak *atomic.Int64) *forwarder {
	f := &forwarder{fn: fn, start: start, notify: notify, peak: peak}
	f.changed.L = &f.mu
	return f
}

// push queues it, starting the goroutine if none runs, and reports whether
// the queue is now full. It never waits: it is called from loops that must
// keep reading x/crypto's queues. A caller told the queue is full pushes
// nothing more until room receives, so that at most reqQueueLen items wait
// (plus a channel's EOF and close).
func (f *forwarder) push(it item) (full bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, it)
	if f.peak != nil {
		for n := int64(len(f.queue)); ; {
			old := f.peak.Load()
			if n <= old || f.peak.CompareAndSwap(old, n) {
				break
			}
		}
	}
	if !f.busy {
		f.busy = true
		f.start(f.run)
	}
	full = len(f.queue) >= reqQueueLen
	if full && f.room == nil {
		f.room = make(chan struct{}, 1)
	}
	return full
}

// run forwards queued items until none is left.
func (f *forwarder) run() {
	f.mu.Lock()
	for len(f.queue) > 0 {
		it := f.queue[0]
		room := len(f.queue) == reqQueueLen
		if room {
			// The pusher paused when the queue filled. One
			// signal pending is enough.
			select {
			case f.room <- struct{}{}:
			default:
			}
		}
		f.queue[0] = item{}
		f.queue = f.queue[1:]
		f.mu.Unlock()
		if room && f.notify != nil {
			f.notify()
		}
		f.fn(it)
		f.mu.Lock()
	}
	f.queue = nil // an idle channel holds no array
	f.busy = false
	f.changed.Broadcast()
	f.mu.Unlock()
}

// wait returns once every item pushed so far has been forwarded.
func (f *forwarder) wait() {
	f.mu.Lock()
	for f.busy {
		f.changed.Wait()
	}
	f.mu.Unlock()
}

// notifyChannel is x/crypto's channel with patch 7 (see
// third_party/golang.org/x/crypto/PATCHES.md): it says when it has
// something to read, and its reads can give up after a while, so that a
// quiet channel needs no goroutine. Patch 21 adds Lost: the channel went
// with its connection, not by the peer's CLOSE.
type notifyChannel interface {
	ssh.Channel
	ReadAnyTo(wait time.Duration, write func(p []byte, extended uint32) (int, error)) (n int, extended uint32, err error)
	Readable() bool
	SetNotify(f func())
	Lost() bool
}

// copyLinger is how long a copy waits for more data before its goroutine
// ends. A transfer, or someone typing, keeps its copy; a channel quiet for
// longer holds none until data comes again.
const copyLinger = time.Second

// pair relays between a channel of the client (down) and its counterpart on
// the lander (up) until both are closed, without a goroutine of its own:
// most channels are idle shells and forwards, and an idle session's memory
// is mostly its goroutines' stacks. Each channel calls kick when it has
// something (x/crypto patch 7, SetNotify), as do a copy that ends and a
// forwarder that has room again; kick runs service in a goroutine until
// nothing is left to do. A copy per direction runs while data flows.
type pair struct {
	r        *relay
	chanType string
	from     side   // who opened the channel
	release  func() // gives back the channel's window (relay.accept)
	// up moves the client's channel to the lander's; down the other way.
	up, down   *half
	nUp, nDown atomic.Int64 // bytes relayed, for the log

	// lost is set, by the down half's forwarder, when the lander's channel
	// went with the lander's connection; finish reads it after that
	// forwarder is done.
	lost bool

	mu sync.Mutex
	// mu protects the following.
	dirty    bool // kicked since service last looked
	running  bool // a service goroutine runs
	finished bool // over: kick starts nothing
}

// start starts p: its first service looks at what arrived before the
// channels had a notify function. p keeps a count in r.wg until finish,
// so that kick may start goroutines in it.
func (p *pair) start() {
	p.r.wg.Add(1)
	// Read before the first SetNotify, after which service may run.
	halves := []*half{p.up, p.down}
	reqs := []<-chan *ssh.Request{p.up.reqs, p.down.reqs}
	for i, h := range halves {
		reqs := reqs[i]
		h.src.SetNotify(func() {
			// Data for a running copy is its business; the copy
			// kicks when it ends.
			if !h.copyRunning.Load() || len(reqs) > 0 {
				p.kick()
			}
		})
	}
	p.kick()
}

// debug logs msg at Debug with the channel's type and opener, as bridge's
// log does (a logger per pair would cost its memory for the channel's life).
func (p *pair) debug(msg string, args ...any) {
	p.r.log.Debug(msg, append([]any{"type", p.chanType, "from", p.from.String()}, args...)...)
}

// kick makes service run (again): something may have arrived.
func (p *pair) kick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dirty = true
	if p.running || p.finished {
		return
	}
	p.running = true
	p.r.wg.Go(p.service)
}

// service steps both halves until no kick came since the last step, then
// ends; or, once both channels are closed, finishes p.
func (p *pair) service() {
	for {
		p.mu.Lock()
		if !p.dirty {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.dirty = false
		p.mu.Unlock()
		p.up.step()
		p.down.step()
		if p.up.done && p.down.done {
			p.finish()
			return
		}
	}
}

// finish waits for both halves' forwarders to close their channels, then
// gives back what the pair held.
func (p *pair) finish() {
	p.up.fw.wait()
	p.down.fw.wait()
	p.up.src.SetNotify(nil)
	p.down.src.SetNotify(nil)
	p.release()
	p.debug("channel closed", "bytes_up", p.nUp.Load(), "bytes_down", p.nDown.Load())
	p.mu.Lock()
	p.finished = true
	p.mu.Unlock()
	p.r.pairDone(p.from, p.lost)
	p.r.wg.Done()
}

// half is one direction of a channel pair: src's data and stderr go to dst
// (copy), src's requests to dst with their replies back, then src's EOF as
// dst.CloseWrite and src's close as dst.Close.
//
// x/crypto hands out data and requests separately, losing their relative
// order. The order of EOF and requests matters (sshd must see "exec" before
// the client's EOF, the client must see "exit-status" before CLOSE), so the
// EOF goes through the forwarder, after every request src sent before it,
// and dst is closed only after src's request queue has ended.
//
// Towards the client, a command's end ("exit-status", "exit-signal") is
// parked until the copy of the output has ended, and the EOF and close
// queue behind it. sshd sends it once the command is reaped, which can be
// before output still in the pipe and before its EOF; directly, that output
// is already in the client's window, but here it may still be held by ours,
// and a client that stops reading at the exit status would lose it. Only
// that one request waits: src's request queue is still read and forwarded
// (x/crypto holds 4 requests a channel, then stops reading the whole
// connection), so the lander's keepalives are answered meanwhile.
type half struct {
	p     *pair
	src   notifyChannel
	dst   ssh.Channel
	total *atomic.Int64 // Stats' counter of this direction
	local *atomic.Int64 // the pair's
	fw    *forwarder

	// copyRunning is set while a copy goroutine runs (by step, which
	// starts it, and cleared by the copy); copyEnded once a copy has seen
	// src's EOF or failed to write.
	copyRunning atomic.Bool
	copyEnded   atomic.Bool

	// Only service uses the following.
	reqs      <-chan *ssh.Request // src's requests; nil once closed
	parksEnd  bool                // lander → client: a command's end waits for the output
	held      *ssh.Request        // the command's end, parked until the copy has ended
	paused    bool                // fw is full: reqs is not read until fw.room
	eofQueued bool
	done      bool // the close is queued

	// inflight is held while a request of src is forwarded and answered;
	// reverse is the other half's. Before closing dst, the half waits
	// for the reply to dst's request in flight to src: src answered it
	// before its CLOSE (sshd answers "exec" and then the command may exit
	// at once), and the answer must not be overtaken by our CLOSE. src is
	// closed by then, so that request is not waiting for anything.
	inflight sync.Mutex
	reverse  *sync.Mutex
}

func (r *relay) newHalf(p *pair, src notifyChannel, srcReqs <-chan *ssh.Request, dst ssh.Channel, total, local *atomic.Int64) *half {
	h := &half{p: p, src: src, dst: dst, reqs: srcReqs, total: total, local: local}
	h.fw = newForwarder(h.forward, r.wg.Go, p.kick, r.peakQueue)
	return h
}

// forward is h's forwarder function.
//
// A lander channel that went with the lander's connection (x/crypto patch
// 21, Lost), not by a CLOSE of sshd, gets no CLOSE relayed to the client:
// the client is given the output that came before (and an EOF, as the
// channel's reads show no difference between one sshd sent just before it
// went and none), and then its connection ends with the channel still
// open, as directly. OpenSSH's client then says "Connection to lander
// closed by remote host." (exit 255), where a channel closed first ended
// the session without a word.
func (h *half) forward(it item) {
	switch {
	case it.close && h.parksEnd && h.src.Lost():
		// As for a close: the answer to a request of the client in
		// flight goes first; the client's connection may end once the
		// pair counts as lost.
		h.reverse.Lock()
		h.p.lost = true
		h.p.r.pairLost()
		h.reverse.Unlock()
	case it.eof:
		// Fails harmlessly when dst is already closed.
		_ = h.dst.CloseWrite()
	case it.close:
		h.reverse.Lock()
		_ = h.dst.Close()
		h.reverse.Unlock()
	default:
		req := it.req
		h.inflight.Lock()
		ok, err := h.dst.SendRequest(req.Type, req.WantReply, req.Payload)
		if err != nil {
			ok = false // dst is gone: the request cannot succeed.
		}
		if err := req.Reply(ok, nil); err != nil {
			h.p.debug("channel request reply not sent", "request", req.Type, "err", err)
		}
		h.inflight.Unlock()
	}
}

// push hands it to h's forwarder, pausing h when that fills its queue.
func (h *half) push(it item) {
	if h.fw.push(it) {
		h.paused = true
	}
}

// step does what h has to do now, without waiting: start a copy when src
// has data and none runs, take src's requests (unless h is paused), queue
// src's EOF once the copy has seen it and src's close once its request
// queue has ended.
func (h *half) step() {
	if h.done {
		return
	}
	// copyRunning first: a copy sets copyEnded before it clears
	// copyRunning.
	if !h.copyRunning.Load() && !h.copyEnded.Load() && h.src.Readable() {
		h.copyRunning.Store(true)
		h.p.r.wg.Go(h.copy)
	}
	if h.paused {
		select {
		case <-h.fw.room:
			h.paused = false
		default:
			return
		}
	}
	// Loaded before the requests are taken: every request src sent
	// before its EOF is queued by the time the copy sees the EOF.
	ended := h.copyEnded.Load()
	if h.held != nil && ended {
		req := h.held
		h.held = nil
		h.push(item{req: req})
	}
	for h.reqs != nil && !h.paused {
		select {
		case req, ok := <-h.reqs:
			if !ok {
				h.reqs = nil
				continue
			}
			if h.parksEnd && !ended && h.held == nil && endsCommand(req.Type) {
				h.held = req // the copy kicks the pair when it ends
				continue
			}
			h.push(item{req: req})
			continue
		default:
		}
		break
	}
	if h.paused {
		return
	}
	if ended && !h.eofQueued && h.held == nil {
		h.eofQueued = true
		h.push(item{eof: true})
	}
	if h.reqs == nil && h.eofQueued {
		h.done = true
		h.push(item{close: true})
	}
}

// endsCommand reports whether a channel request of type typ tells that the
// command ended (RFC 4254 6.10), which comes after the command's output.
func endsCommand(typ string) bool { return typ == "exit-status" || typ == "exit-signal" }

// copy runs relay.copy for h and tells the pair when it ends.
func (h *half) copy() {
	if h.p.r.copy(h.dst, h.src, h.total, h.local) {
		h.copyEnded.Store(true)
	}
	h.copyRunning.Store(false)
	h.p.kick()
}

// copy moves src's data to dst and src's stderr to dst's until src has
// been quiet for r.linger (false), or src reaches EOF or either fails
// (true: src is done), counting bytes written. The bytes go from src's
// buffer straight into the packets written to dst (x/crypto patches 15
// and 14): the copy holds no buffer of its own.
func (r *relay) copy(dst ssh.Channel, src notifyChannel, total, local *atomic.Int64) (ended bool) {
	var werr error
	write := func(p []byte, extended uint32) (int, error) {
		out := io.Writer(dst)
		if extended == 1 {
			out = dst.Stderr()
		}
		var w int
		w, werr = out.Write(p)
		return w, werr
	}
	for {
		n, _, rerr := src.ReadAnyTo(r.linger, write)
		total.Add(int64(n))
		local.Add(int64(n))
		if werr != nil {
			// dst is closed (only then do channel writes fail): its
			// side is tearing the pair down.
			return true
		}
		// A read that moved data can also report that its window
		// adjustment could not be sent (src's connection is gone); what
		// src sent before is still buffered and owed to dst, so only a
		// read that moves nothing (EOF) ends the copy.
		if rerr != nil && n == 0 {
			return !errors.Is(rerr, os.ErrDeadlineExceeded)
		}
	}
}

// global handles one global request from one side: dropped, or forwarded to
// the other side with the reply (and its payload, e.g. the port tcpip-forward
// allocated) passed back. The client's keepalive@openssh.com goes to the
// lander too: with ServerAliveInterval the client learns that the lander
// stopped answering (a hung login node), which an answer from the gatekeeper
// would hide for good.
func (r *relay) global(req *ssh.Request, from side) {
	target := r.up
	if from == fromLander {
		target = r.down
	}
	switch {
	case from == fromClient && req.Type == reqNoMoreSess:
		// OpenSSH's client sends it right after its session's channel
		// open. x/crypto hands channel opens and global requests over
		// apart, so forwarded it could reach the lander before that open,
		// and sshd then ends the connection ("attempt to open a session
		// after additional sessions disabled"); for the same reason the
		// relay cannot enforce it itself. Dropped, as a server that does
		// not know it would.
		r.log.Debug("global request dropped", "type", req.Type, "from", from.String())
		if req.WantReply {
			_ = req.Reply(false, nil)
		}
		return
	case from == fromClient && req.Type == reqHostkeysPrv:
		// The client asks for proof of the keys the gatekeeper
		// announced: the gatekeeper's to give, not the lander's.
		r.proveHostKeys(req)
		return
	case from == fromLander && (req.Type == reqHostkeys || req.Type == reqHostkeysPrv):
		// These would teach the client the lander's host keys under the
		// gatekeeper's name.
		r.log.Debug("global request dropped", "type", req.Type, "from", from.String())
		_ = req.Reply(false, nil)
		return
	}
	ok, payload, err := target.SendRequest(req.Type, req.WantReply, req.Payload)
	if err != nil {
		r.warn(r.log, "global request not forwarded", "type", req.Type, "from", from.String(), "err", err)
		ok, payload = false, nil
	}
	if err := req.Reply(ok, payload); err != nil {
		r.log.Debug("global request reply not sent", "type", req.Type, "from", from.String(), "err", err)
	}
}
