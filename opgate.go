// Package opgate holds the vocabulary every other package shares: the
// identifiers of operators, sites, terminals, roles, permissions, grants,
// cards and sessions. It has no logic and imports only the standard library,
// so that any package may depend on it without pulling in another's rules.
package opgate

import "errors"

// OperatorID is a staff member's identity in opgate, issued once and never
// reused (PIA: 操作者ID), e.g. "OP-7Q2K9X4M".
type OperatorID string

// SiteID names a place whose operators one section chief manages.
type SiteID string

// AllSites is the site of a grant that holds at every site. Only the
// security_admin and auditor roles may be granted there.
const AllSites SiteID = "*"

// TerminalID names a registered counter terminal.
type TerminalID string

// RoleID names a set of permissions.
type RoleID string

// Permission is one duty operation, e.g. "resident.read".
type Permission string

// GrantID identifies one role given to one operator at one site.
type GrantID string

// CardID identifies an operator's registered IC card (a WebAuthn credential).
type CardID string

// SessionID identifies one login session.
type SessionID string

// ChangeID identifies a lifecycle change dated ahead.
type ChangeID string

// Storage outcomes every package may branch on. Stores return these in
// place of their drivers' errors; domain packages turn them into their own.
var (
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrUnavailable = errors.New("unavailable")
)
