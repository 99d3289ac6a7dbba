package connserve

// Startups caps the connections that have not authenticated yet, like
// sshd's MaxStartups: past the cap new connections are turned away at once
// instead of queueing for the login grace time.
type Startups struct {
	slots chan struct{}
}

// NewStartups allows n unauthenticated connections at once.
func NewStartups(n int) *Startups {
	return &Startups{slots: make(chan struct{}, n)}
}

// Max is the cap.
func (s *Startups) Max() int { return cap(s.slots) }

// Enter takes a slot for a new connection; ok is false when all are taken.
// release gives the slot back when the connection has authenticated or
// ended; calling it again does nothing, so it can also be deferred.
func (s *Startups) Enter() (release func(), ok bool) {
	select {
	case s.slots <- struct{}{}:
	default:
		return func() {}, false
	}
	released := false
	return func() {
		if !released {
			released = true
			<-s.slots
		}
	}, true
}
