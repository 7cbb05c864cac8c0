package authn

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/internal/clock"
	"github.com/opgate/opgate/lifecycle"
	"github.com/opgate/opgate/policy"
)

// Errors a login answers with. Every credential failure is
// ErrInvalidCredentials, whatever failed; the precise reason goes only to
// the audit event (house style 9).
var (
	ErrInvalidCredentials  = errors.New("authn: invalid credentials")
	ErrTerminalNotAllowed  = errors.New("authn: terminal not allowed")
	ErrLoginSuspended      = errors.New("authn: logins are suspended (emergency stop)")
	ErrPasswordChangeFirst = errors.New("authn: the password must be changed first")
)

// RateLimitedError refuses attempts from a terminal or address that failed
// for too many distinct operators (password spraying).
type RateLimitedError struct{ RetryAfter time.Duration }

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("authn: too many failed logins from here; retry after %s", e.RetryAfter)
}

// PolicyViolationError lists why a new password was refused.
type PolicyViolationError struct{ Violations []Violation }

func (e *PolicyViolationError) Error() string {
	return fmt.Sprintf("authn: password breaks policy: %v", e.Violations)
}

// LoginTx is what the login ceremonies read and write in a transaction.
type LoginTx interface {
	SessionTx
	GetOperator(ctx context.Context, id opgate.OperatorID) (lifecycle.Operator, error)
	GetOperatorForUpdate(ctx context.Context, id opgate.OperatorID) (lifecycle.Operator, error)
	UpdateOperator(ctx context.Context, o lifecycle.Operator) error
	GetLock(ctx context.Context, id opgate.OperatorID) (lifecycle.Lock, error)
	PutLock(ctx context.Context, l lifecycle.Lock) error
	GetTerminal(ctx context.Context, id opgate.TerminalID) (lifecycle.Terminal, error)
	GetCard(ctx context.Context, id opgate.CardID) (Card, error)
	GetCardByCredential(ctx context.Context, credentialID []byte) (Card, error)
	UpdateCard(ctx context.Context, c Card) error
	CreateCard(ctx context.Context, c Card) error
	ListCards(ctx context.Context, op opgate.OperatorID) ([]Card, error)
	GetPassword(ctx context.Context, op opgate.OperatorID) (PasswordRecord, error)
	PutPassword(ctx context.Context, p PasswordRecord) error
	PasswordHistory(ctx context.Context, op opgate.OperatorID, n int) ([]string, error)
	CreateEnrollment(ctx context.Context, e Enrollment) error
	TakeEnrollment(ctx context.Context, codeHash []byte, at time.Time) (Enrollment, error)
	ListStops(ctx context.Context) ([]Stop, error)
}

// LoginDB runs the login ceremonies' transactions.
type LoginDB interface {
	InTx(ctx context.Context, fn func(LoginTx) error) error
	View(ctx context.Context, fn func(LoginTx) error) error
}

// Challenges is the ephemeral state of ceremonies and rate windows.
type Challenges interface {
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	Get(ctx context.Context, key string) ([]byte, error)
	Take(ctx context.Context, key string) ([]byte, error)
	AddDistinct(ctx context.Context, key, member string, at time.Time, window time.Duration) (int, error)
}

// Access answers the questions about rights a login asks.
type Access interface {
	// HasGrantAt reports whether op holds a live grant at site.
	HasGrantAt(ctx context.Context, op opgate.OperatorID, site opgate.SiteID) (bool, error)
	// Require is nil when op holds perm at site.
	Require(ctx context.Context, op opgate.OperatorID, perm opgate.Permission, site opgate.SiteID) error
}

// Emergency tells whether logins are stopped at a site (R6.2).
type Emergency interface {
	Stopped(ctx context.Context, site opgate.SiteID) (bool, error)
}

// LoginConfig configures Logins.
type LoginConfig struct {
	// DB, Challenges, Ceremonies, Sessions, Policy and Access are required.
	DB         LoginDB
	Challenges Challenges
	Ceremonies *Ceremonies
	Sessions   *Sessions
	Policy     PolicySource
	Access     Access
	// Emergency may be nil: no emergency stop is ever in force.
	Emergency Emergency
	// IsNotFound recognises the challenge store's "absent". Required.
	IsNotFound func(error) bool
	// Secret keys the decoy credential IDs shown for unknown operators.
	// Required, at least 32 bytes.
	Secret []byte
	// PasswordParams are the argon2id parameters of new hashes. Zero means
	// DefaultPasswordParams.
	PasswordParams PasswordParams
	// EnrollmentTTL is how long an enrollment code lives. Zero means 15 min.
	EnrollmentTTL time.Duration
	// Clock is the time source. If nil, clock.Real{} is used.
	Clock clock.Clock
}

// Logins runs card enrollment, card and password logins, refresh, logout
// and password changes.
type Logins struct {
	cfg LoginConfig
	clk clock.Clock
}

// NewLogins validates cfg.
func NewLogins(cfg LoginConfig) (*Logins, error) {
	var errs []error
	if cfg.DB == nil {
		errs = append(errs, errors.New("DB is required"))
	}
	if cfg.Challenges == nil {
		errs = append(errs, errors.New("Challenges is required"))
	}
	if cfg.Ceremonies == nil {
		errs = append(errs, errors.New("Ceremonies is required"))
	}
	if cfg.Sessions == nil {
		errs = append(errs, errors.New("Sessions is required"))
	}
	if cfg.Policy == nil {
		errs = append(errs, errors.New("Policy is required"))
	}
	if cfg.Access == nil {
		errs = append(errs, errors.New("Access is required"))
	}
	if cfg.IsNotFound == nil {
		errs = append(errs, errors.New("IsNotFound is required"))
	}
	if len(cfg.Secret) < 32 {
		errs = append(errs, errors.New("Secret of at least 32 bytes is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("authn: login config: %w", err)
	}
	if cfg.PasswordParams == (PasswordParams{}) {
		cfg.PasswordParams = DefaultPasswordParams
	}
	if cfg.EnrollmentTTL == 0 {
		cfg.EnrollmentTTL = 15 * time.Minute
	}
	clk := cfg.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	return &Logins{cfg: cfg, clk: clk}, nil
}

// NormalizeOperatorID folds the spellings a terminal may send for one
// operator ID — full-width characters from a Japanese input mode, lower
// case — into one, so that they share one lockout counter.
func NormalizeOperatorID(s string) opgate.OperatorID {
	s = strings.ToUpper(strings.TrimSpace(norm.NFKC.String(s)))
	if len(s) > 64 {
		// Cut between characters: half of one is not text, and
		// PostgreSQL refuses it instead of finding nobody.
		cut := 64
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return opgate.OperatorID(s)
}

// Client is where an attempt comes from.
type Client struct {
	TerminalID opgate.TerminalID
	Addr       string // the client's IP address
}

// Login is a successful login's answer.
type Login struct {
	Issued
	PasswordChangeRequired bool
	PasswordExpiresAt      time.Time
	PasswordExpiresSoon    bool // within 14 days (CL 17-3)
}

// ---- card login

type loginState struct {
	Ceremony   []byte            `json:"c"`
	Operator   opgate.OperatorID `json:"o,omitempty"`
	Terminal   opgate.TerminalID `json:"t"`
	Addr       string            `json:"a,omitempty"`
	Expires    int64             `json:"x"`
	Enrollment *Enrollment       `json:"e,omitempty"`
}

func loginKey(id string) string { return "login:" + id }

// BeginCard starts a card login at a terminal, for a named operator or
// for whoever's discoverable card answers.
func (l *Logins) BeginCard(ctx context.Context, c Client, operator string) (loginID string, options []byte, err error) {
	if err := l.sprayCheck(ctx, c); err != nil {
		return "", nil, err
	}
	var allow [][]byte
	op := NormalizeOperatorID(operator)
	if op != "" {
		var cards []Card
		err := l.cfg.DB.View(ctx, func(tx LoginTx) (err error) { cards, err = tx.ListCards(ctx, op); return })
		if err != nil {
			return "", nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		for _, cd := range cards {
			if cd.Status == CardActive {
				allow = append(allow, cd.CredentialID)
			}
		}
		if len(allow) == 0 {
			// An unknown operator, or one without a card, gets a decoy
			// that looks like a real credential ID, so that the answer
			// does not tell who exists.
			allow = [][]byte{l.decoy(op)}
		}
	}
	options, state, expires, err := l.cfg.Ceremonies.BeginLogin(allow)
	if err != nil {
		return "", nil, err
	}
	id := "L-" + randomToken(18)
	b, _ := json.Marshal(loginState{Ceremony: state, Operator: op, Terminal: c.TerminalID, Addr: c.Addr, Expires: expires.UnixMicro()})
	if err := l.cfg.Challenges.Put(ctx, loginKey(id), b, expires.Sub(l.clk.Now())+time.Minute); err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return id, options, nil
}

func (l *Logins) decoy(op opgate.OperatorID) []byte {
	m := hmac.New(sha256.New, l.cfg.Secret)
	m.Write([]byte("decoy-credential\x00" + string(op)))
	return m.Sum(nil)
}

// FinishCard completes a card login. The challenge is taken atomically, so
// of any number of submissions of one assertion exactly one is judged.
func (l *Logins) FinishCard(ctx context.Context, c Client, loginID string, credential []byte, password *string) (Login, error) {
	if len(loginID) > 64 {
		return Login{}, ErrInvalidCredentials
	}
	raw, err := l.cfg.Challenges.Take(ctx, loginKey(loginID))
	if err != nil {
		if l.cfg.IsNotFound(err) {
			return Login{}, ErrInvalidCredentials
		}
		return Login{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var st loginState
	if json.Unmarshal(raw, &st) != nil {
		return Login{}, ErrInvalidCredentials
	}
	if st.Terminal != c.TerminalID && c.TerminalID != "" {
		// The terminal that finishes is the one that began.
		return Login{}, ErrInvalidCredentials
	}
	c.TerminalID = st.Terminal
	if err := l.sprayCheck(ctx, c); err != nil {
		return Login{}, err
	}
	now := l.clk.Now()
	if !now.Before(time.UnixMicro(st.Expires)) {
		l.failUnknown(ctx, c, st.Operator, ReasonChallengeExpired)
		return Login{}, ErrInvalidCredentials
	}
	p, err := l.policy(ctx)
	if err != nil {
		return Login{}, err
	}
	if !p.Allows(policy.MethodCard) && !p.Allows(policy.MethodCardPassword) {
		// Cards are not a method of this policy (a card model found
		// compromised, say): no credential is judged.
		l.auditRefusal(ctx, st.Operator, c, ReasonMethodNotAllowed, "login")
		return Login{}, ErrInvalidCredentials
	}
	if !needsPassword(p) {
		return l.finishCardInTx(ctx, c, st, credential, p, now)
	}
	// Card and password: the password's hash must not be computed while
	// the operator's row is locked, so an attempt slot is taken first.
	var (
		card     Card
		slot     string
		found    bool
		lockErr  error
		stateErr error
	)
	assertion, err := l.cfg.Ceremonies.FinishLogin(st.Ceremony, credential, func(credID, userHandle []byte) (StoredCredential, error) {
		var cerr error
		cerr = l.cfg.DB.View(ctx, func(tx LoginTx) (err error) { card, err = tx.GetCardByCredential(ctx, credID); return })
		if errors.Is(cerr, opgate.ErrNotFound) {
			return StoredCredential{}, ErrUnknownCredential
		}
		if cerr != nil {
			stateErr = cerr
			return StoredCredential{}, cerr
		}
		found = true
		if st.Operator != "" && card.OperatorID != st.Operator {
			return StoredCredential{}, ErrUnknownCredential
		}
		// The operator is known: take an attempt slot before the card's
		// signature is judged. While locked nothing is judged.
		slot, lockErr = l.reserve(ctx, p.Lockout, card.OperatorID, now)
		if lockErr != nil {
			return StoredCredential{}, lockErr
		}
		return StoredCredential{OperatorID: card.OperatorID, CredentialID: card.CredentialID, PublicKey: card.PublicKey,
			AAGUID: card.AAGUID, SignCount: card.SignCount, Flags: card.Flags}, nil
	})
	switch {
	case stateErr != nil:
		return Login{}, fmt.Errorf("%w: %v", ErrUnavailable, stateErr)
	case lockErr != nil:
		if errors.Is(lockErr, ErrUnavailable) || errors.Is(lockErr, opgate.ErrUnavailable) {
			return Login{}, lockErr
		}
		l.auditRefusal(ctx, card.OperatorID, c, reasonOf(lockErr), "card:"+string(card.ID))
		return Login{}, lockErr
	case slot == "":
		// No operator to count against: an unknown card, a card of
		// another operator than the one named, or a malformed answer.
		reason := ReasonUnknownCard
		if found {
			reason = ReasonOtherOperatorsCard
		} else if ce, ok := errors.AsType[*CeremonyError](err); ok && ce.Reason != "unknown_credential" {
			reason = ce.Reason
		}
		l.failUnknown(ctx, c, st.Operator, reason)
		return Login{}, ErrInvalidCredentials
	}
	op := card.OperatorID
	if err != nil {
		reason := "ceremony_failed"
		if ce, ok := errors.AsType[*CeremonyError](err); ok {
			reason = ce.Reason
		}
		return Login{}, l.fail(ctx, op, slot, c, reason, card, reason == "sign_count_regressed")
	}
	if card.Status != CardActive {
		return Login{}, l.fail(ctx, op, slot, c, "card_"+string(card.Status), card, false)
	}
	return l.complete(ctx, op, slot, c, p, &card, assertion.SignCount, password, "", nil)
}

// ---- password login

// Password logs in with operator ID and password, where policy allows it.
func (l *Logins) Password(ctx context.Context, c Client, operator, password string) (Login, error) {
	if err := l.sprayCheck(ctx, c); err != nil {
		return Login{}, err
	}
	p, err := l.policy(ctx)
	if err != nil {
		return Login{}, err
	}
	op := NormalizeOperatorID(operator)
	if !p.AllowsPasswordLogin(string(op)) {
		// Not a method of this policy: no credential is judged, the
		// answer and its cost are those of any failure.
		DummyVerify(l.cfg.PasswordParams)
		l.auditRefusal(ctx, op, c, ReasonMethodNotAllowed, "login")
		return Login{}, ErrInvalidCredentials
	}
	// Everything complete reads before its transaction, read once here.
	var pre loginRead
	err = l.cfg.DB.View(ctx, func(tx LoginTx) (err error) {
		if pre.o, err = tx.GetOperator(ctx, op); err != nil {
			return err
		}
		if pre.rec, err = tx.GetPassword(ctx, op); err != nil {
			return err
		}
		pre.t, err = terminalOf(ctx, tx, c.TerminalID)
		return err
	})
	rec := pre.rec
	if errors.Is(err, opgate.ErrNotFound) || op == "" {
		// Unknown operator, or one without a password: the same hash
		// work as a real check, the same answer.
		DummyVerify(l.cfg.PasswordParams)
		l.failUnknown(ctx, c, op, ReasonUnknownOperator)
		return Login{}, ErrInvalidCredentials
	}
	if err != nil {
		return Login{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	now := l.clk.Now()
	slot, err := l.reserve(ctx, p.Lockout, op, now)
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			l.auditRefusal(ctx, op, c, reasonOf(err), "operator:"+string(op))
		}
		return Login{}, err
	}
	ok, verr := VerifyPassword(rec.Hash, password)
	if verr != nil || !ok {
		return Login{}, l.fail(ctx, op, slot, c, ReasonBadPassword, Card{}, false)
	}
	return l.complete(ctx, op, slot, c, p, nil, 0, nil, rec.Hash, &pre)
}

// loginRead is what a login reads of the store before its transaction.
type loginRead struct {
	o   lifecycle.Operator
	rec PasswordRecord // zero when the operator has no password
	t   lifecycle.Terminal
}

// terminalOf reads a terminal; an unknown one is the zero Terminal, which
// the refusal judges.
func terminalOf(ctx context.Context, tx LoginTx, id opgate.TerminalID) (lifecycle.Terminal, error) {
	t, err := tx.GetTerminal(ctx, id)
	if errors.Is(err, opgate.ErrNotFound) {
		return lifecycle.Terminal{}, nil
	}
	return t, err
}

// Audit reasons of refused logins (the data of login.failed events).
const (
	ReasonUnknownOperator    = "unknown_operator"
	ReasonUnknownCard        = "unknown_card"
	ReasonOtherOperatorsCard = "card_of_another_operator"
	ReasonBadPassword        = "bad_password"
	ReasonPasswordMissing    = "password_required"
	ReasonChallengeExpired   = "challenge_expired"
	ReasonMethodNotAllowed   = "method_not_allowed"
	ReasonOperatorInactive   = "operator_inactive"
	ReasonTerminalUnknown    = "terminal_unknown"
	ReasonTerminalOtherSite  = "terminal_other_site"
	ReasonLocked             = "locked"
	ReasonBusy               = "attempts_in_progress"
	ReasonEmergencyStop      = "emergency_stop"
)

func reasonOf(err error) string {
	switch {
	case errors.Is(err, ErrBusy):
		return ReasonBusy
	case errors.Is(err, ErrLoginSuspended):
		return ReasonEmergencyStop
	}
	if _, ok := errors.AsType[*LockedError](err); ok {
		return ReasonLocked
	}
	return "refused"
}

// complete finishes a login whose credential was right: the operator,
// terminal, emergency state and second factor are checked, then the
// session starts in the same transaction as the success event. judged is
// the password hash a password was already judged against ("" if none);
// pre is what the caller has already read (nil: complete reads it).
func (l *Logins) complete(ctx context.Context, op opgate.OperatorID, slot string, c Client, p policy.Policy, card *Card, signCount uint32, password *string, judged string, pre *loginRead) (Login, error) {
	now := l.clk.Now()
	if pre == nil {
		pre = &loginRead{}
		err := l.cfg.DB.View(ctx, func(tx LoginTx) (err error) {
			if pre.o, err = tx.GetOperator(ctx, op); err != nil {
				return err
			}
			if pre.t, err = terminalOf(ctx, tx, c.TerminalID); err != nil {
				return err
			}
			if pre.rec, err = tx.GetPassword(ctx, op); errors.Is(err, opgate.ErrNotFound) {
				pre.rec, err = PasswordRecord{}, nil
			}
			return err
		})
		if err != nil {
			l.abandon(ctx, op, slot)
			return Login{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	o, rec, t := pre.o, pre.rec, pre.t
	var err error
	resource := "operator:" + string(op)
	if card != nil {
		resource = "card:" + string(card.ID)
	}
	if card != nil && needsPassword(p) {
		// A password is still to be judged: an operator who may not log in
		// here now is refused before argon2id is spent. The transaction
		// below judges all of it again, as it is then.
		stopped, err := l.stopped(ctx, t)
		if err == nil {
			var refused error
			var reason string
			if refused, reason, err = l.refusal(ctx, o, t, stopped, now); err == nil && refused != nil {
				l.abandon(ctx, op, slot)
				l.auditRefusal(ctx, op, c, reason, resource)
				return Login{}, refused
			}
		}
		if err != nil {
			l.abandon(ctx, op, slot)
			return Login{}, err
		}
	}
	amr := []string{"pwd"}
	if card != nil {
		amr = []string{"hwk", "user"}
		// A site that requires card and password asks for both in one
		// finish call.
		if needsPassword(p) {
			if password == nil || rec.Hash == "" {
				if rec.Hash == "" {
					DummyVerify(l.cfg.PasswordParams)
				}
				return Login{}, l.fail(ctx, op, slot, c, ReasonPasswordMissing, *card, false)
			}
			if ok, err := VerifyPassword(rec.Hash, *password); err != nil || !ok {
				return Login{}, l.fail(ctx, op, slot, c, ReasonBadPassword, *card, false)
			}
			amr, judged = append(amr, "pwd"), rec.Hash
		}
	}
	mustChange := rec.Hash != "" && slices.Contains(amr, "pwd") && (rec.Temporary || !now.Before(rec.ExpiresAt))
	var out Login
	var refused error
	var counted, nowLocked bool
	var failedLock lifecycle.Lock
	err = l.cfg.DB.InTx(ctx, func(tx LoginTx) error {
		refused, counted, nowLocked = nil, false, false
		o, err := tx.GetOperatorForUpdate(ctx, op)
		if err != nil {
			return err
		}
		lk, err := tx.GetLock(ctx, op)
		if err != nil {
			return err
		}
		// The password took tens of milliseconds to judge: the operator,
		// the card and the stops are judged again as they are now, under
		// the operator's lock, so that a retirement, a transfer, a lost
		// card or a stop committed meanwhile, which ended the sessions it
		// found, cannot be followed by a new one.
		var reason string
		if judged != "" {
			// The password judged must still be the operator's: a reset or
			// change committed meanwhile ended the sessions it found.
			cur, err := tx.GetPassword(ctx, op)
			if err != nil && !errors.Is(err, opgate.ErrNotFound) {
				return err
			}
			if subtle.ConstantTimeCompare([]byte(cur.Hash), []byte(judged)) != 1 {
				refused, reason = ErrInvalidCredentials, "password_changed_meanwhile"
			}
		}
		if card != nil && refused == nil {
			cd, err := tx.GetCard(ctx, card.ID)
			if err != nil {
				return err
			}
			if card = &cd; cd.Status != CardActive {
				refused, reason = ErrInvalidCredentials, "card_"+string(cd.Status)
			} else if counterRegressed(signCount, cd.SignCount) {
				// Another login of this card committed a counter at least
				// as high since the signature was checked: two answers
				// carrying one counter (a possible clone), as on the
				// card-only path. Counted, and the card flagged.
				counted, refused = true, ErrInvalidCredentials
				failedLock, nowLocked, err = l.failIn(ctx, tx, p.Lockout, o, lk, slot, c, CeremonySignCountRegressed, cd, true, now)
				return err
			}
		}
		if refused == nil {
			stopped, err := l.stoppedIn(ctx, tx, t)
			if err != nil {
				return err
			}
			if refused, reason, err = l.refusal(ctx, o, t, stopped, now); err != nil {
				return err
			}
		}
		if refused != nil {
			_, err := tx.AppendAudit(ctx, refusalEvent(op, c, reason, resource, now))
			return err
		}
		out.Issued, err = l.succeedIn(ctx, tx, o, lk, slot, t, card, signCount, amr, mustChange, c, now)
		return err
	})
	if err == nil && counted {
		// The slot became the failure.
		l.spray(ctx, c, op, now, p.Lockout)
		if nowLocked {
			return Login{}, &LockedError{Until: failedLock.Until}
		}
		return Login{}, refused
	}
	if err == nil && refused != nil {
		err = refused
	}
	if err != nil {
		l.abandon(ctx, op, slot)
		return Login{}, err
	}
	if out.Issued, err = l.cfg.Sessions.Activate(ctx, out.Issued); err != nil {
		return Login{}, err
	}
	out.PasswordChangeRequired = mustChange
	if rec.Hash != "" {
		out.PasswordExpiresAt = rec.ExpiresAt
		out.PasswordExpiresSoon = rec.ExpiresAt.Sub(now) < 14*24*time.Hour
	}
	return out, nil
}

// stopped reports whether an emergency stop covers the terminal's site.
func (l *Logins) stopped(ctx context.Context, t lifecycle.Terminal) (bool, error) {
	if l.cfg.Emergency == nil || t.ID == "" {
		return false, nil
	}
	s, err := l.cfg.Emergency.Stopped(ctx, t.SiteID)
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return s, nil
}

// stoppedIn reports whether logins at t's site are stopped, as tx sees
// the stops.
func (l *Logins) stoppedIn(ctx context.Context, tx LoginTx, t lifecycle.Terminal) (bool, error) {
	if l.cfg.Emergency == nil || t.ID == "" {
		return false, nil
	}
	stops, err := tx.ListStops(ctx)
	if err != nil {
		return false, err
	}
	return covers(stops, t.SiteID), nil
}

// refusal says why an operator whose credential was right may not log in
// at this terminal now, if anything does: the answer to give and the audit
// reason. A refusal is audited, never counted against the operator.
func (l *Logins) refusal(ctx context.Context, o lifecycle.Operator, t lifecycle.Terminal, stopped bool, now time.Time) (error, string, error) {
	switch {
	case o.Status != lifecycle.Active || (!o.ValidUntil.IsZero() && !now.Before(o.ValidUntil)):
		return ErrInvalidCredentials, ReasonOperatorInactive, nil
	case t.ID == "" || !t.RemovedAt.IsZero():
		return ErrTerminalNotAllowed, ReasonTerminalUnknown, nil
	}
	ok, err := l.cfg.Access.HasGrantAt(ctx, o.ID, t.SiteID)
	switch {
	case err != nil:
		return nil, "", err
	case !ok:
		return ErrTerminalNotAllowed, ReasonTerminalOtherSite, nil
	case stopped && l.cfg.Access.Require(ctx, o.ID, "emergency.stop", t.SiteID) != nil:
		// Holders of emergency.stop stay able to log in, so that someone
		// can resume.
		return ErrLoginSuspended, ReasonEmergencyStop, nil
	}
	return nil, "", nil
}

// succeedIn records a successful login inside tx: the lock lk (as read
// in tx) cleared and slot released, the last login, the counter of card
// (as read in tx), the new session and its event.
func (l *Logins) succeedIn(ctx context.Context, tx LoginTx, o lifecycle.Operator, lk lifecycle.Lock, slot string, t lifecycle.Terminal, card *Card, signCount uint32,
	amr []string, mustChange bool, c Client, now time.Time) (Issued, error) {
	// Most logins follow a login: nothing to clear, nothing to write.
	if !lockClear(lk) {
		if err := tx.PutLock(ctx, Succeed(lk, slot)); err != nil {
			return Issued{}, err
		}
	}
	o.LastLoginAt = now
	if err := tx.UpdateOperator(ctx, o); err != nil {
		return Issued{}, err
	}
	st := Start{OperatorID: o.ID, SiteID: t.SiteID, TerminalID: t.ID, AMR: amr, PasswordChangeRequired: mustChange}
	if card != nil {
		cd := *card
		cd.SignCount = signCount
		if err := tx.UpdateCard(ctx, cd); err != nil {
			return Issued{}, err
		}
		st.CardID = card.ID
	}
	iss, err := l.cfg.Sessions.StartIn(ctx, tx, st)
	if err != nil {
		return Issued{}, err
	}
	_, err = tx.AppendAudit(ctx, audit.Event{Type: audit.LoginSucceeded, At: now, ActorID: o.ID, OperatorID: o.ID, SiteID: t.SiteID,
		TerminalID: t.ID, Resource: "session:" + string(iss.Session.ID), Data: audit.D(map[string]any{"amr": amr, "card_id": string(st.CardID), "addr": c.Addr})})
	return iss, err
}

// policy is the policy in force. A policy that cannot be read is a store
// that cannot be reached: the attempt is refused unjudged, as unavailable.
func (l *Logins) policy(ctx context.Context) (policy.Policy, error) {
	p, err := l.cfg.Policy.Policy(ctx)
	if err != nil {
		return p, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return p, nil
}

// reserve takes an attempt slot for op in its own short transaction.
func (l *Logins) reserve(ctx context.Context, p policy.Lockout, op opgate.OperatorID, now time.Time) (string, error) {
	id := randomToken(9)
	err := l.cfg.DB.InTx(ctx, func(tx LoginTx) error {
		// The operator row is the lock every replica's attempts queue on.
		if _, err := tx.GetOperatorForUpdate(ctx, op); err != nil {
			return err
		}
		lk, err := tx.GetLock(ctx, op)
		if err != nil {
			return err
		}
		next, rerr := Reserve(p, lk, id, now)
		if rerr != nil {
			return rerr
		}
		return tx.PutLock(ctx, next)
	})
	if err != nil {
		if _, ok := errors.AsType[*LockedError](err); ok || errors.Is(err, ErrBusy) {
			return "", err
		}
		return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return id, nil
}

// abandon frees a slot whose attempt was refused for something other than
// the credential; nothing is counted.
func (l *Logins) abandon(ctx context.Context, op opgate.OperatorID, slot string) {
	_ = l.cfg.DB.InTx(context.WithoutCancel(ctx), func(tx LoginTx) error {
		if _, err := tx.GetOperatorForUpdate(ctx, op); err != nil {
			return err
		}
		lk, err := tx.GetLock(ctx, op)
		if err != nil {
			return err
		}
		return tx.PutLock(ctx, Abandon(lk, slot))
	})
}

// fail counts a judged failure, locks at the threshold and records both,
// in one transaction. It answers ErrInvalidCredentials, or the lock.
func (l *Logins) fail(ctx context.Context, op opgate.OperatorID, slot string, c Client, reason string, card Card, clone bool) error {
	ctx = context.WithoutCancel(ctx) // a failure is recorded even if the client went away
	p, err := l.policy(ctx)
	if err != nil {
		return err
	}
	now := l.clk.Now()
	var lk lifecycle.Lock
	var locked bool
	err = l.cfg.DB.InTx(ctx, func(tx LoginTx) error {
		o, err := tx.GetOperatorForUpdate(ctx, op)
		if err != nil {
			return err
		}
		if lk, err = tx.GetLock(ctx, op); err != nil {
			return err
		}
		lk, locked, err = l.failIn(ctx, tx, p.Lockout, o, lk, slot, c, reason, card, clone, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	l.spray(ctx, c, op, now, p.Lockout)
	if locked {
		return &LockedError{Until: lk.Until}
	}
	return ErrInvalidCredentials
}

// failIn records a judged failure of operator o, whose lock row tx holds.
func (l *Logins) failIn(ctx context.Context, tx LoginTx, p policy.Lockout, o lifecycle.Operator, lk lifecycle.Lock, slot string, c Client, reason string, card Card, clone bool, now time.Time) (lifecycle.Lock, bool, error) {
	lk, locked := Fail(p, lk, slot, now)
	if err := tx.PutLock(ctx, lk); err != nil {
		return lk, false, err
	}
	resource := "operator:" + string(o.ID)
	d := map[string]any{"reason": reason, "addr": c.Addr, "failures": len(lk.Recent)}
	if card.ID != "" {
		resource = "card:" + string(card.ID)
		if clone {
			// Flag the card for the anomaly report (possible clone).
			cd, err := tx.GetCard(ctx, card.ID)
			if err != nil {
				return lk, false, err
			}
			cd.CloneSuspected = true
			if err := tx.UpdateCard(ctx, cd); err != nil {
				return lk, false, err
			}
		}
	}
	if _, err := tx.AppendAudit(ctx, audit.Event{Type: audit.LoginFailed, At: now, OperatorID: o.ID, SiteID: o.SiteID, TerminalID: c.TerminalID,
		Resource: resource, Reason: reason, Data: audit.D(d)}); err != nil {
		return lk, false, err
	}
	if locked {
		ld := map[string]any{"permanent": lk.Permanent, "locks_in_row": lk.LocksInRow}
		if !lk.Until.IsZero() {
			ld["locked_until"] = lk.Until.Format(time.RFC3339Nano)
		}
		if _, err := tx.AppendAudit(ctx, audit.Event{Type: audit.AccountLocked, At: now, OperatorID: o.ID, SiteID: o.SiteID, TerminalID: c.TerminalID,
			Resource: "operator:" + string(o.ID), Reason: "too many failed logins", Data: audit.D(ld)}); err != nil {
			return lk, false, err
		}
	}
	return lk, locked, nil
}

// failUnknown records a failure that names no known operator: nothing to
// lock, but the spraying counter and the history hear of it.
func (l *Logins) failUnknown(ctx context.Context, c Client, op opgate.OperatorID, reason string) {
	ctx = context.WithoutCancel(ctx)
	now := l.clk.Now()
	_ = l.cfg.DB.InTx(ctx, func(tx LoginTx) error {
		_, err := tx.AppendAudit(ctx, unknownEvent(c, op, reason, now))
		return err
	})
	if p, err := l.cfg.Policy.Policy(ctx); err == nil {
		l.spray(ctx, c, op, now, p.Lockout)
	}
}

func unknownEvent(c Client, op opgate.OperatorID, reason string, now time.Time) audit.Event {
	return audit.Event{Type: audit.LoginFailed, At: now, TerminalID: c.TerminalID, Resource: "login",
		Reason: reason, Data: audit.D(map[string]any{"reason": reason, "addr": c.Addr, "claimed_operator": truncateID(op)})}
}

func refusalEvent(op opgate.OperatorID, c Client, reason, resource string, now time.Time) audit.Event {
	return audit.Event{Type: audit.LoginFailed, At: now, OperatorID: op, TerminalID: c.TerminalID, Resource: resource,
		Reason: reason, Data: audit.D(map[string]any{"reason": reason, "addr": c.Addr, "counted": false})}
}

func truncateID(op opgate.OperatorID) string {
	s := string(op)
	if len(s) > 32 {
		s = s[:32]
	}
	return s
}

// auditRefusal records a refused attempt that was not a judged failure.
func (l *Logins) auditRefusal(ctx context.Context, op opgate.OperatorID, c Client, reason, resource string) {
	ctx = context.WithoutCancel(ctx)
	now := l.clk.Now()
	_ = l.cfg.DB.InTx(ctx, func(tx LoginTx) error {
		_, err := tx.AppendAudit(ctx, refusalEvent(op, c, reason, resource, now))
		return err
	})
}

// ---- password spraying (R2.4): failures across distinct operators from
// one terminal or one address.

func sprayKeys(c Client) []string {
	var keys []string
	if c.TerminalID != "" {
		keys = append(keys, "spray:t:"+string(c.TerminalID))
	}
	if c.Addr != "" {
		keys = append(keys, "spray:a:"+c.Addr)
	}
	return keys
}

func (l *Logins) spray(ctx context.Context, c Client, op opgate.OperatorID, now time.Time, p policy.Lockout) {
	member := string(op)
	if member == "" {
		member = "?"
	}
	for _, k := range sprayKeys(c) {
		n, err := l.cfg.Challenges.AddDistinct(ctx, k, member, now, p.SprayWindow)
		if err == nil && n >= p.SprayDistinctOperators {
			until := now.Add(p.SprayWindow)
			_ = l.cfg.Challenges.Put(ctx, "block:"+k, []byte(fmt.Sprint(until.UnixMicro())), p.SprayWindow+time.Minute)
		}
	}
}

func (l *Logins) sprayCheck(ctx context.Context, c Client) error {
	now := l.clk.Now()
	for _, k := range sprayKeys(c) {
		b, err := l.cfg.Challenges.Get(ctx, "block:"+k)
		if err != nil {
			if l.cfg.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		var us int64
		if _, err := fmt.Sscan(string(b), &us); err == nil {
			if until := time.UnixMicro(us); now.Before(until) {
				return &RateLimitedError{RetryAfter: until.Sub(now)}
			}
		}
	}
	return nil
}
