package authn

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/lifecycle"
)

// Stop is an emergency stop in force (R6.2): logins at a site, or at every
// site, are refused until someone resumes.
type Stop struct {
	Scope     opgate.SiteID // opgate.AllSites for everything
	Reason    string
	StoppedBy opgate.OperatorID
	StoppedAt time.Time
}

// EmergencyTx is what an emergency stop reads and writes.
type EmergencyTx interface {
	ListStops(ctx context.Context) ([]Stop, error)
	PutStop(ctx context.Context, s Stop) error
	DeleteStop(ctx context.Context, scope opgate.SiteID) error
	EndSessions(ctx context.Context, scope SessionScope, at time.Time, reason string) ([]opgate.SessionID, error)
	AppendAudit(ctx context.Context, e audit.Event) (audit.Event, error)
}

// EmergencyDB runs emergency transactions.
type EmergencyDB interface {
	InTx(ctx context.Context, fn func(EmergencyTx) error) error
	View(ctx context.Context, fn func(EmergencyTx) error) error
}

// Emergencies stops and resumes logins. Stops are durable: they live in
// the store, so that losing the ephemeral state never lifts one.
type Emergencies struct {
	db       EmergencyDB
	sessions *Sessions
	clk      interface{ Now() time.Time }
}

// NewEmergencies returns the emergency service.
func NewEmergencies(db EmergencyDB, sessions *Sessions, clk interface{ Now() time.Time }) *Emergencies {
	return &Emergencies{db: db, sessions: sessions, clk: clk}
}

// Stopped reports whether logins at site are stopped.
func (e *Emergencies) Stopped(ctx context.Context, site opgate.SiteID) (bool, error) {
	var stops []Stop
	if err := e.db.View(ctx, func(tx EmergencyTx) (err error) { stops, err = tx.ListStops(ctx); return }); err != nil {
		return false, err
	}
	return covers(stops, site), nil
}

// covers reports whether one of stops stops logins at site.
func covers(stops []Stop, site opgate.SiteID) bool {
	for _, s := range stops {
		if s.Scope == opgate.AllSites || s.Scope == site {
			return true
		}
	}
	return false
}

// List returns the stops in force.
func (e *Emergencies) List(ctx context.Context) ([]Stop, error) {
	var stops []Stop
	err := e.db.View(ctx, func(tx EmergencyTx) (err error) { stops, err = tx.ListStops(ctx); return })
	return stops, err
}

// ErrStopConflict is a stop that is already, or a resume that is not, in force.
var ErrStopConflict = errors.New("authn: emergency stop state conflict")

// Stop ends every session in scope except the actor's own (who must stay
// able to resume) and refuses logins there. Permission is the caller's to
// check.
func (e *Emergencies) Stop(ctx context.Context, actor lifecycle.Actor, except opgate.SessionID, scope opgate.SiteID, reason string) (int, error) {
	now := e.clk.Now()
	var ended []opgate.SessionID
	err := e.db.InTx(ctx, func(tx EmergencyTx) error {
		if err := tx.PutStop(ctx, Stop{Scope: scope, Reason: reason, StoppedBy: actor.ID, StoppedAt: now}); err != nil {
			if errors.Is(err, opgate.ErrConflict) {
				return fmt.Errorf("%w: a stop for %s is already in force", ErrStopConflict, scope)
			}
			return err
		}
		sc := SessionScope{SiteID: scope, Except: except}
		if scope == opgate.AllSites {
			sc = SessionScope{All: true, Except: except}
		}
		var err error
		if ended, err = tx.EndSessions(ctx, sc, now, "emergency_stop"); err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.EmergencyStopped, At: now, ActorID: actor.ID, SiteID: scope, TerminalID: actor.TerminalID,
			Resource: "emergency:" + string(scope), Reason: reason, Data: audit.D(map[string]any{"sessions_ended": len(ended)})})
		return err
	})
	if err != nil {
		return 0, err
	}
	e.sessions.SessionsEnded(ctx, ended)
	return len(ended), nil
}

// Resume lifts a stop.
func (e *Emergencies) Resume(ctx context.Context, actor lifecycle.Actor, scope opgate.SiteID, reason string) error {
	now := e.clk.Now()
	return e.db.InTx(ctx, func(tx EmergencyTx) error {
		if err := tx.DeleteStop(ctx, scope); err != nil {
			if errors.Is(err, opgate.ErrNotFound) {
				return fmt.Errorf("%w: no stop for %s is in force", ErrStopConflict, scope)
			}
			return err
		}
		_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.EmergencyResumed, At: now, ActorID: actor.ID, SiteID: scope, TerminalID: actor.TerminalID,
			Resource: "emergency:" + string(scope), Reason: reason})
		return err
	})
}
