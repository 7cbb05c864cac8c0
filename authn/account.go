package authn

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/lifecycle"
)

// ---- refresh (R2.8): opaque, stored hashed, rotated on every use; a
// reused old token ends the whole session.

// Refresh exchanges a refresh token for a new access token and a new
// refresh token.
func (l *Logins) Refresh(ctx context.Context, token string) (Issued, error) {
	sid, _, ok := strings.Cut(token, ".")
	if !ok || len(token) > 200 || !strings.HasPrefix(sid, "S-") {
		return Issued{}, ErrUnauthenticated
	}
	p, err := l.cfg.Policy.Policy(ctx)
	if err != nil {
		return Issued{}, err
	}
	// The shared state is read before anything changes: a refresh refused
	// as unavailable must leave the current refresh token good, or the
	// client's retry would look like a replay and end the session.
	if _, err := l.cfg.Sessions.entry(ctx, opgate.SessionID(sid)); errors.Is(err, ErrUnavailable) {
		return Issued{}, err
	}
	now := l.clk.Now()
	var out Issued
	var reused bool
	err = l.cfg.DB.InTx(ctx, func(tx LoginTx) error {
		ss, err := tx.GetSession(ctx, opgate.SessionID(sid))
		if errors.Is(err, opgate.ErrNotFound) {
			return ErrUnauthenticated
		}
		if err != nil {
			return err
		}
		if !ss.Live(now, 0) {
			return ErrUnauthenticated
		}
		if subtle.ConstantTimeCompare(hashToken(token[len(sid)+1:]), ss.RefreshHash) != 1 {
			// Not the current token: an old one replayed, or a forgery.
			// Either way the session can no longer be trusted.
			ss.EndedAt, ss.EndReason = now, "refresh_token_reuse"
			if err := tx.UpdateSession(ctx, ss); err != nil {
				return err
			}
			reused = true
			_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.SessionEnded, At: now, OperatorID: ss.OperatorID, SiteID: ss.SiteID,
				TerminalID: ss.TerminalID, Resource: "session:" + sid, Reason: "refresh_token_reuse"})
			return err
		}
		secret := randomToken(32)
		ss.RefreshHash = hashToken(secret)
		if err := tx.UpdateSession(ctx, ss); err != nil {
			return err
		}
		tok, ttl, err := l.cfg.Sessions.sign(ss, p, now)
		if err != nil {
			return err
		}
		out = Issued{Session: ss, AccessToken: tok, ExpiresIn: ttl, RefreshToken: sid + "." + secret}
		return nil
	})
	if reused && err == nil {
		l.cfg.Sessions.SessionsEnded(ctx, []opgate.SessionID{opgate.SessionID(sid)})
		return Issued{}, ErrUnauthenticated
	}
	if err != nil {
		return Issued{}, err
	}
	// The access token is accepted only while the session entry says the
	// session lives; idle time is checked on use.
	if _, err := l.cfg.Sessions.Authenticate(ctx, out.AccessToken); err != nil {
		return Issued{}, err
	}
	return out, nil
}

// ---- passwords (R2.3)

// ChangePassword sets the caller's own password after checking the
// current one (a wrong current password counts like a failed login), ends
// the operator's other sessions, and lets this one do everything again.
func (l *Logins) ChangePassword(ctx context.Context, p Principal, current, next string) error {
	pol, err := l.cfg.Policy.Policy(ctx)
	if err != nil {
		return err
	}
	op := p.OperatorID
	var rec PasswordRecord
	var o lifecycle.Operator
	var history []string
	err = l.cfg.DB.View(ctx, func(tx LoginTx) (err error) {
		if o, err = tx.GetOperator(ctx, op); err != nil {
			return err
		}
		if rec, err = tx.GetPassword(ctx, op); errors.Is(err, opgate.ErrNotFound) {
			rec, err = PasswordRecord{}, nil
		}
		if err != nil {
			return err
		}
		history, err = tx.PasswordHistory(ctx, op, pol.Password.History)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	now := l.clk.Now()
	c := Client{TerminalID: p.TerminalID}
	if rec.Hash != "" {
		slot, err := l.reserve(ctx, pol.Lockout, op, now)
		if err != nil {
			return err
		}
		if ok, verr := VerifyPassword(rec.Hash, current); verr != nil || !ok {
			return l.fail(ctx, op, slot, c, ReasonBadPassword, Card{}, false)
		}
		l.abandon(ctx, op, slot)
	} else {
		// Card-only operators set a first password with their card
		// session alone.
		DummyVerify(l.cfg.PasswordParams)
	}
	if rec.Hash != "" {
		history = append([]string{rec.Hash}, history...)
	}
	if pol.Password.History < len(history) {
		history = history[:pol.Password.History+1]
	}
	if v := CheckPassword(pol.Password, next, PasswordContext{OperatorID: string(op), Name: o.Name, History: history}); len(v) > 0 {
		return &PolicyViolationError{Violations: v}
	}
	hash, err := HashPassword(next, l.cfg.PasswordParams)
	if err != nil {
		return err
	}
	var ended []opgate.SessionID
	err = l.cfg.DB.InTx(ctx, func(tx LoginTx) error {
		// The current password took tens of milliseconds to judge. Under
		// the operator's lock (which a reset takes too), the password
		// judged must still be the operator's and this session still live:
		// else a reset committed meanwhile, made perhaps because the
		// password was stolen, would be undone by this change.
		if _, err := tx.GetOperatorForUpdate(ctx, op); err != nil {
			return err
		}
		cur, err := tx.GetPassword(ctx, op)
		if err != nil && !errors.Is(err, opgate.ErrNotFound) {
			return err
		}
		ss, err := tx.GetSession(ctx, p.SessionID)
		if err != nil {
			return err
		}
		if !ss.EndedAt.IsZero() {
			return ErrUnauthenticated
		}
		if subtle.ConstantTimeCompare([]byte(cur.Hash), []byte(rec.Hash)) != 1 {
			return ErrInvalidCredentials
		}
		if err := tx.PutPassword(ctx, PasswordRecord{OperatorID: op, Hash: hash, SetAt: now, ExpiresAt: now.Add(pol.Password.MaxAge)}); err != nil {
			return err
		}
		if ended, err = tx.EndSessions(ctx, SessionScope{OperatorID: op, Except: p.SessionID}, now, "password_changed"); err != nil {
			return err
		}
		ss.PasswordChangeRequired = false
		if err := tx.UpdateSession(ctx, ss); err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.PasswordChanged, At: now, ActorID: op, OperatorID: op, SiteID: o.SiteID,
			TerminalID: p.TerminalID, Resource: "operator:" + string(op), Data: audit.D(map[string]any{"other_sessions_ended": len(ended)})})
		return err
	})
	if err != nil {
		return err
	}
	l.cfg.Sessions.SessionsEnded(ctx, ended)
	return l.cfg.Sessions.Refresh(ctx, p.SessionID)
}

// ResetPassword gives an operator a temporary password that must be
// changed at the next login, and ends their sessions. Permission to do so
// is the caller's to check.
func (l *Logins) ResetPassword(ctx context.Context, actor lifecycle.Actor, op opgate.OperatorID, siteOf opgate.SiteID) (string, error) {
	temp := NewTemporaryPassword()
	hash, err := HashPassword(temp, l.cfg.PasswordParams)
	if err != nil {
		return "", err
	}
	now := l.clk.Now()
	var ended []opgate.SessionID
	err = l.cfg.DB.InTx(ctx, func(tx LoginTx) error {
		if _, err := tx.GetOperatorForUpdate(ctx, op); err != nil {
			return err
		}
		if err := tx.PutPassword(ctx, PasswordRecord{OperatorID: op, Hash: hash, Temporary: true, SetAt: now, ExpiresAt: now}); err != nil {
			return err
		}
		var err error
		if ended, err = tx.EndSessions(ctx, SessionScope{OperatorID: op}, now, "password_reset"); err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.PasswordReset, At: now, ActorID: actor.ID, OperatorID: op, SiteID: siteOf,
			TerminalID: actor.TerminalID, Resource: "operator:" + string(op), Data: audit.D(map[string]any{"temporary": true, "sessions_ended": len(ended)})})
		return err
	})
	if err != nil {
		return "", err
	}
	l.cfg.Sessions.SessionsEnded(ctx, ended)
	return temp, nil
}

// ---- cards (R2.5, R2.6)

// StartEnrollment creates a one-time enrollment code for one operator and
// one card serial. Permission is the caller's to check.
func (l *Logins) StartEnrollment(ctx context.Context, actor lifecycle.Actor, op opgate.OperatorID, serial, label string) (string, time.Time, error) {
	serial, label = strings.TrimSpace(serial), strings.TrimSpace(label)
	if serial == "" || len(serial) > 64 || len(label) > 200 {
		return "", time.Time{}, &PolicyViolationError{}
	}
	code := NewEnrollmentCode()
	now := l.clk.Now()
	exp := now.Add(l.cfg.EnrollmentTTL)
	err := l.cfg.DB.InTx(ctx, func(tx LoginTx) error {
		o, err := tx.GetOperator(ctx, op)
		if err != nil {
			return err
		}
		if o.Status != lifecycle.Active && o.Status != lifecycle.Suspended {
			return fmt.Errorf("%w: operator is %s", opgate.ErrConflict, o.Status)
		}
		if err := tx.CreateEnrollment(ctx, Enrollment{CodeHash: EnrollmentCodeHash(code), OperatorID: op, CardSerial: serial, Label: label,
			CreatedBy: actor.ID, CreatedAt: now, ExpiresAt: exp}); err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.CardEnrollmentStarted, At: now, ActorID: actor.ID, OperatorID: op, SiteID: o.SiteID,
			TerminalID: actor.TerminalID, Resource: "operator:" + string(op), Data: audit.D(map[string]any{"card_serial": serial, "expires_at": exp.Format(time.RFC3339)})})
		return err
	})
	return code, exp, err
}

func enrollKey(id string) string { return "enroll:" + id }

// BeginEnrollment uses up the code and starts the card's registration
// ceremony. A code works once: a failed ceremony needs a new code.
func (l *Logins) BeginEnrollment(ctx context.Context, code string) (string, []byte, error) {
	now := l.clk.Now()
	var e Enrollment
	var cards []Card
	var o lifecycle.Operator
	err := l.cfg.DB.InTx(ctx, func(tx LoginTx) (err error) {
		if e, err = tx.TakeEnrollment(ctx, EnrollmentCodeHash(code), now); err != nil {
			return err
		}
		if o, err = tx.GetOperator(ctx, e.OperatorID); err != nil {
			return err
		}
		cards, err = tx.ListCards(ctx, e.OperatorID)
		return err
	})
	if errors.Is(err, opgate.ErrNotFound) || (err == nil && !now.Before(e.ExpiresAt)) {
		return "", nil, ErrInvalidCredentials
	}
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var exclude [][]byte
	for _, c := range cards {
		exclude = append(exclude, c.CredentialID)
	}
	options, state, expires, err := l.cfg.Ceremonies.BeginEnrollment(EnrollUser{OperatorID: o.ID, Name: o.Name, Exclude: exclude})
	if err != nil {
		return "", nil, err
	}
	id := "E-" + randomToken(18)
	b, _ := json.Marshal(loginState{Ceremony: state, Operator: o.ID, Expires: expires.UnixMicro(), Enrollment: &e})
	if err := l.cfg.Challenges.Put(ctx, enrollKey(id), b, expires.Sub(now)+time.Minute); err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return id, options, nil
}

// FinishEnrollment registers the card the ceremony created.
func (l *Logins) FinishEnrollment(ctx context.Context, id string, credential []byte) (Card, error) {
	if len(id) > 64 {
		return Card{}, ErrInvalidCredentials
	}
	raw, err := l.cfg.Challenges.Take(ctx, enrollKey(id))
	if err != nil {
		if l.cfg.IsNotFound(err) {
			return Card{}, ErrInvalidCredentials
		}
		return Card{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var st loginState
	if json.Unmarshal(raw, &st) != nil || st.Enrollment == nil {
		return Card{}, ErrInvalidCredentials
	}
	now := l.clk.Now()
	if !now.Before(time.UnixMicro(st.Expires)) {
		return Card{}, ErrInvalidCredentials
	}
	p, err := l.cfg.Policy.Policy(ctx)
	if err != nil {
		return Card{}, err
	}
	var o lifecycle.Operator
	var cards []Card
	if err := l.cfg.DB.View(ctx, func(tx LoginTx) (err error) {
		if o, err = tx.GetOperator(ctx, st.Operator); err != nil {
			return err
		}
		cards, err = tx.ListCards(ctx, st.Operator)
		return err
	}); err != nil {
		return Card{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var exclude [][]byte
	for _, c := range cards {
		exclude = append(exclude, c.CredentialID)
	}
	cred, err := l.cfg.Ceremonies.FinishEnrollment(st.Ceremony, credential, EnrollUser{OperatorID: o.ID, Name: o.Name, Exclude: exclude},
		CardPolicy{AllowedAAGUIDs: p.Cards.AllowedAAGUIDs, AllowBackupEligible: p.Cards.AllowBackupEligible})
	if err != nil {
		reason := "ceremony_failed"
		if ce, ok := errors.AsType[*CeremonyError](err); ok {
			reason = ce.Reason
		}
		_ = l.cfg.DB.InTx(context.WithoutCancel(ctx), func(tx LoginTx) error {
			_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.CardRevoked, At: now, OperatorID: o.ID, SiteID: o.SiteID, Resource: "enrollment",
				Reason: "enrollment refused: " + reason, Data: audit.D(map[string]any{"card_serial": st.Enrollment.CardSerial, "reason": reason})})
			return err
		})
		return Card{}, ErrInvalidCredentials
	}
	card := Card{ID: opgate.CardID(lifecycle.NewID("C-", 12)), OperatorID: o.ID, Serial: st.Enrollment.CardSerial, Label: st.Enrollment.Label,
		Status: CardActive, CredentialID: cred.CredentialID, PublicKey: cred.PublicKey, SignCount: cred.SignCount, AAGUID: cred.AAGUID,
		Flags: cred.Flags, Attestation: cred.Attestation, EnrolledAt: now, EnrolledBy: st.Enrollment.CreatedBy, StatusChanged: now}
	var lapsed string
	err = l.cfg.DB.InTx(ctx, func(tx LoginTx) error {
		// The operator as it is now, locked: an enrollment begun before a
		// retirement or a transfer lapses with it, as the cards it
		// collected did — a card comes from someone who may still issue
		// one for this operator, at the operator's site of today.
		cur, err := tx.GetOperatorForUpdate(ctx, o.ID)
		if err != nil {
			return err
		}
		switch {
		case cur.Status != lifecycle.Active && cur.Status != lifecycle.Suspended,
			!cur.ValidUntil.IsZero() && !now.Before(cur.ValidUntil):
			lapsed = "operator_" + string(cur.Status)
		case st.Enrollment.CreatedBy != "" && l.cfg.Access.Require(ctx, st.Enrollment.CreatedBy, "operator.manage", cur.SiteID) != nil:
			// Refused, or not answerable now: either way no card (the
			// chief starts a new enrollment).
			lapsed = "issuer_no_longer_manages_operator"
		}
		if lapsed != "" {
			_, err := tx.AppendAudit(ctx, audit.Event{Type: audit.CardRevoked, At: now, OperatorID: o.ID, SiteID: cur.SiteID, Resource: "enrollment",
				Reason: "enrollment refused: " + lapsed, Data: audit.D(map[string]any{"card_serial": st.Enrollment.CardSerial, "reason": lapsed})})
			return err
		}
		if err := tx.CreateCard(ctx, card); err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.CardEnrolled, At: now, ActorID: st.Enrollment.CreatedBy, OperatorID: o.ID, SiteID: o.SiteID,
			Resource: "card:" + string(card.ID), Data: audit.D(map[string]any{"card_serial": card.Serial, "attestation": card.Attestation, "flags": int(card.Flags)})})
		return err
	})
	if errors.Is(err, opgate.ErrConflict) {
		return Card{}, ErrInvalidCredentials // the credential is registered already
	}
	if err == nil && lapsed != "" {
		return Card{}, ErrInvalidCredentials
	}
	return card, err
}

// CardStatusChange marks a card lost, stolen, returned (collected) or
// revoked; every session made with it ends at once (R2.6). Permission is
// the caller's to check.
func (l *Logins) CardStatusChange(ctx context.Context, actor lifecycle.Actor, op opgate.OperatorID, id opgate.CardID, to CardStatus, reason string) (Card, error) {
	now := l.clk.Now()
	var card Card
	var ended []opgate.SessionID
	err := l.cfg.DB.InTx(ctx, func(tx LoginTx) error {
		// The operator's row lock is the one a card login holds while it
		// judges the card and writes its counter: taken first, the change
		// waits for a login in flight (whose session it then ends) or
		// makes that login read the card as lost.
		o, err := tx.GetOperatorForUpdate(ctx, op)
		if err != nil {
			return err
		}
		if card, err = tx.GetCard(ctx, id); err != nil {
			return err
		}
		if card.OperatorID != op {
			return opgate.ErrNotFound
		}
		if card.Status != CardActive && !(to == CardCollected && (card.Status == CardLost || card.Status == CardStolen)) {
			return fmt.Errorf("%w: card is %s", opgate.ErrConflict, card.Status)
		}
		card.Status, card.StatusChanged = to, now
		if err := tx.UpdateCard(ctx, card); err != nil {
			return err
		}
		if ended, err = tx.EndSessions(ctx, SessionScope{CardID: id}, now, "card_"+string(to)); err != nil {
			return err
		}
		typ := audit.CardRevoked
		if to == CardCollected {
			typ = audit.CardCollected
		}
		_, err = tx.AppendAudit(ctx, audit.Event{Type: typ, At: now, ActorID: actor.ID, OperatorID: op, SiteID: o.SiteID, TerminalID: actor.TerminalID,
			Resource: "card:" + string(id), Reason: reason, Data: audit.D(map[string]any{"status": string(to), "sessions_ended": len(ended)})})
		return err
	})
	if err != nil {
		return Card{}, err
	}
	l.cfg.Sessions.SessionsEnded(ctx, ended)
	return card, nil
}
