package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/authpipe/authpipe/internal/sim"
)

// The demo's traffic is a pure function of the world (seed, start, rate) and
// a time interval, so a restarted demo regenerates exactly the events, in
// exactly the order, that the killed one had put into the simulator, and the
// simulator gives them the same log_ids.

// attack is one scripted attack of a cycle, and the rule that must catch it.
type attack struct {
	rule   string
	offset time.Duration               // from the cycle's start
	events func(cycle int) []sim.Event // dates are set by eventsBetween
	last   time.Duration               // offset of its last event
}

var attacks = []attack{
	{
		// Password guessing against one account from one IP.
		rule: "FailedLoginsPerIP", offset: 3 * time.Second, last: 3*time.Second + 29*100*time.Millisecond,
		events: func(cycle int) []sim.Event {
			var out []sim.Event
			for range 30 {
				out = append(out, sim.Event{Type: "fp", UserID: "auth0|ceo", UserName: "ceo@example.com",
					IP: fmt.Sprintf("192.0.2.%d", 10+cycle%200), UserAgent: "python-requests/2.31",
					Connection: "Username-Password-Authentication"})
			}
			return out
		},
	},
	{
		// Auth0's brute-force protection answering the password guessing:
		// after 10 failures into one account from one IP it blocks that IP
		// for the account and logs limit_wc.
		rule: "AttackProtectionTriggered", offset: 3*time.Second + 10*100*time.Millisecond, last: 3*time.Second + 10*100*time.Millisecond,
		events: func(cycle int) []sim.Event {
			return []sim.Event{{Type: "limit_wc", UserID: "auth0|ceo", UserName: "ceo@example.com",
				IP: fmt.Sprintf("192.0.2.%d", 10+cycle%200), UserAgent: "python-requests/2.31",
				Connection: "Username-Password-Authentication"}}
		},
	},
	{
		// Credential stuffing: a leaked list tried from one IP.
		rule: "CredentialStuffing", offset: 7 * time.Second, last: 7*time.Second + 24*150*time.Millisecond,
		events: func(cycle int) []sim.Event {
			var out []sim.Event
			for j := range 25 {
				ev := sim.Event{Type: "fu", UserName: fmt.Sprintf("leaked%d.%d@example.net", cycle, j),
					IP: fmt.Sprintf("198.18.0.%d", 20+cycle%200), UserAgent: "curl/8.4.0",
					Connection: "Username-Password-Authentication"}
				if j%4 == 0 { // some of the list are real users
					ev.Type, ev.UserID = "fp", fmt.Sprintf("auth0|leaked%d", j)
				}
				out = append(out, ev)
			}
			return out
		},
	},
	{
		// Password spraying: one account, many IPs.
		rule: "PasswordSpraying", offset: 11 * time.Second, last: 11*time.Second + 13*200*time.Millisecond,
		events: func(cycle int) []sim.Event {
			var out []sim.Event
			for j := range 14 {
				out = append(out, sim.Event{Type: "fp", UserID: "auth0|admin", UserName: "admin@example.com",
					IP: fmt.Sprintf("100.64.%d.%d", cycle%250, j+1), UserAgent: "Mozilla/5.0",
					Connection: "Username-Password-Authentication"})
			}
			return out
		},
	},
}

func attackSpacing(a attack, n int) time.Duration {
	if n <= 1 {
		return 0
	}
	return (a.last - a.offset) / time.Duration(n-1)
}

// background returns the date of background event i.
func (w world) background(i int) time.Time {
	return w.Start.Add(time.Duration(float64(i) * float64(time.Second) / w.Rate))
}

// eventsBetween returns the world's events dated in [from, to), in the
// order they are added to the simulator: the background traffic and the
// scripted attacks.
func (w world) eventsBetween(from, to time.Time) []sim.Event {
	out := append(w.backgroundBetween(from, to), w.attacksBetween(from, to)...)
	sort.SliceStable(out, func(a, b int) bool { return out[a].Date.Before(out[b].Date) })
	return out
}

// backgroundBetween returns the background events dated in [from, to):
// sign-ons of a population sized for the world's rate (sim.UsersFor), which
// stay under every shipped rule.
func (w world) backgroundBetween(from, to time.Time) []sim.Event {
	if !to.After(from) {
		return nil
	}
	var out []sim.Event
	i := int(math.Ceil(from.Sub(w.Start).Seconds() * w.Rate))
	i = max(i, 0)
	for i > 0 && !w.background(i-1).Before(from) {
		i--
	}
	for ; w.background(i).Before(from); i++ {
	}
	users := sim.UsersFor(w.Rate)
	for ; w.background(i).Before(to); i++ {
		rng := rand.New(rand.NewPCG(w.Seed, uint64(i)))
		out = append(out, sim.GenerateTraffic(rng, 1, w.background(i), 0, users)[0])
	}
	return out
}

// attacksBetween returns the attack events dated in [from, to).
func (w world) attacksBetween(from, to time.Time) []sim.Event {
	if !to.After(from) {
		return nil
	}
	var out []sim.Event
	first := max(int(from.Sub(w.Start)/attackCycle)-1, 0)
	for c := first; ; c++ {
		cycleStart := w.Start.Add(time.Duration(c) * attackCycle)
		if !cycleStart.Before(to) {
			break
		}
		for _, a := range attacks {
			evs := a.events(c)
			step := attackSpacing(a, len(evs))
			for j := range evs {
				evs[j].Date = cycleStart.Add(a.offset + time.Duration(j)*step)
				if !evs[j].Date.Before(from) && evs[j].Date.Before(to) {
					out = append(out, evs[j])
				}
			}
		}
	}
	return out
}

// expectedAlerts names the rules whose attacks have fully happened by now.
func (w world) expectedAlerts(now time.Time) []string {
	var out []string
	for _, a := range attacks {
		if !w.Start.Add(a.last).After(now) {
			out = append(out, a.rule)
		}
	}
	return out
}
