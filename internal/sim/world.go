package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// World is the traffic of authpipe demo and authpipe sim: background
// sign-ons and, every AttackCycle, the scripted Attacks. It is a pure
// function of the world (seed, start, rate) and a time interval, so a
// restarted demo regenerates exactly the events, in exactly the order,
// that the killed one had put into the simulator, and the simulator gives
// them the same log_ids.
type World struct {
	Seed  uint64    `json:"seed"`
	Start time.Time `json:"start"`
	Rate  float64   `json:"rate"` // background events per second
}

// AttackCycle is how often the scripted attacks come again.
const AttackCycle = 3 * time.Minute

// Attack is one scripted attack of a cycle, and the rule that must catch it.
type Attack struct {
	Rule   string
	Offset time.Duration           // from the cycle's start
	Events func(cycle int) []Event // dates are set by EventsBetween
	Last   time.Duration           // offset of its last event
}

// Attacks returns the attacks of every cycle, in the order they start.
func Attacks() []Attack {
	return []Attack{
		{
			// Password guessing against one account from one IP.
			Rule: "FailedLoginsPerIP", Offset: 3 * time.Second, Last: 3*time.Second + 29*100*time.Millisecond,
			Events: func(cycle int) []Event {
				var out []Event
				for range 30 {
					out = append(out, Event{Type: "fp", UserID: "auth0|ceo", UserName: "ceo@example.com",
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
			Rule: "AttackProtectionTriggered", Offset: 3*time.Second + 10*100*time.Millisecond, Last: 3*time.Second + 10*100*time.Millisecond,
			Events: func(cycle int) []Event {
				return []Event{{Type: "limit_wc", UserID: "auth0|ceo", UserName: "ceo@example.com",
					IP: fmt.Sprintf("192.0.2.%d", 10+cycle%200), UserAgent: "python-requests/2.31",
					Connection: "Username-Password-Authentication"}}
			},
		},
		{
			// Credential stuffing: a leaked list tried from one IP.
			Rule: "CredentialStuffing", Offset: 7 * time.Second, Last: 7*time.Second + 24*150*time.Millisecond,
			Events: func(cycle int) []Event {
				var out []Event
				for j := range 25 {
					ev := Event{Type: "fu", UserName: fmt.Sprintf("leaked%d.%d@example.net", cycle, j),
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
			Rule: "PasswordSpraying", Offset: 11 * time.Second, Last: 11*time.Second + 13*200*time.Millisecond,
			Events: func(cycle int) []Event {
				var out []Event
				for j := range 14 {
					out = append(out, Event{Type: "fp", UserID: "auth0|admin", UserName: "admin@example.com",
						IP: fmt.Sprintf("100.64.%d.%d", cycle%250, j+1), UserAgent: "Mozilla/5.0",
						Connection: "Username-Password-Authentication"})
				}
				return out
			},
		},
	}
}

func attackSpacing(a Attack, n int) time.Duration {
	if n <= 1 {
		return 0
	}
	return (a.Last - a.Offset) / time.Duration(n-1)
}

// background returns the date of background event i.
func (w World) background(i int) time.Time {
	return w.Start.Add(time.Duration(float64(i) * float64(time.Second) / w.Rate))
}

// EventsBetween returns the world's events dated in [from, to), in the
// order they are added to the simulator: the background traffic and the
// scripted attacks.
func (w World) EventsBetween(from, to time.Time) []Event {
	out := append(w.BackgroundBetween(from, to), w.attacksBetween(from, to)...)
	sort.SliceStable(out, func(a, b int) bool { return out[a].Date.Before(out[b].Date) })
	return out
}

// BackgroundBetween returns the background events dated in [from, to):
// sign-ons of a population sized for the world's rate (UsersFor), which
// stay under every shipped rule.
func (w World) BackgroundBetween(from, to time.Time) []Event {
	if !to.After(from) {
		return nil
	}
	var out []Event
	i := int(math.Ceil(from.Sub(w.Start).Seconds() * w.Rate))
	i = max(i, 0)
	for i > 0 && !w.background(i-1).Before(from) {
		i--
	}
	for ; w.background(i).Before(from); i++ {
	}
	users := UsersFor(w.Rate)
	for ; w.background(i).Before(to); i++ {
		rng := rand.New(rand.NewPCG(w.Seed, uint64(i)))
		out = append(out, GenerateTraffic(rng, 1, w.background(i), 0, users)[0])
	}
	return out
}

// attacksBetween returns the attack events dated in [from, to).
func (w World) attacksBetween(from, to time.Time) []Event {
	if !to.After(from) {
		return nil
	}
	var out []Event
	first := max(int(from.Sub(w.Start)/AttackCycle)-1, 0)
	for c := first; ; c++ {
		cycleStart := w.Start.Add(time.Duration(c) * AttackCycle)
		if !cycleStart.Before(to) {
			break
		}
		for _, a := range Attacks() {
			evs := a.Events(c)
			step := attackSpacing(a, len(evs))
			for j := range evs {
				evs[j].Date = cycleStart.Add(a.Offset + time.Duration(j)*step)
				if !evs[j].Date.Before(from) && evs[j].Date.Before(to) {
					out = append(out, evs[j])
				}
			}
		}
	}
	return out
}

// ExpectedAlerts names the rules whose attacks have fully happened by now.
func (w World) ExpectedAlerts(now time.Time) []string {
	var out []string
	for _, a := range Attacks() {
		if !w.Start.Add(a.Last).After(now) {
			out = append(out, a.Rule)
		}
	}
	return out
}
