package forward

// drain waits, up to DrainTimeout, for the messages in the clients to
// resolve. Retries are no longer scheduled.
func (f *Forwarder) drain() {
	f.mu.Lock()
	f.phase = draining
	for _, it := range f.items {
		if it.retry != nil {
			it.retry.Stop()
			it.retry = nil
		}
	}
	f.mu.Unlock()
	timeout := f.clock.After(f.cfg.DrainTimeout)
	for {
		f.mu.Lock()
		n := f.active
		f.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-f.idle:
		case <-timeout:
			f.log.Warn("drain timeout: closing the Segment clients with messages in flight", "messages", n)
			return
		}
	}
}

func (f *Forwarder) setPhase(p phase) {
	f.mu.Lock()
	f.phase = p
	f.mu.Unlock()
}
