package sim

import "time"

// Resume restarts a paused stream; what it holds is delivered again.
func (s *Stream) Resume() {
	s.mu.Lock()
	s.stats.Paused, s.failingSince = false, time.Time{}
	s.mu.Unlock()
	s.signal()
}
