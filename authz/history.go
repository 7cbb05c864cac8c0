package authz

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opgate/opgate"
	"github.com/opgate/opgate/audit"
	"github.com/opgate/opgate/roles"
)

// RolesAt answers the roles as they were defined at an instant, from the
// history: today's definitions with every role.changed event after the
// instant undone, newest first (each event carries the role's old and new
// definition). A role created after the instant did not exist then;
// built-in roles seeded at setup, with no event, are as they are now
// until their first change.
func (s *Service) RolesAt(ctx context.Context, at time.Time) (map[opgate.RoleID]roles.Role, error) {
	out := map[opgate.RoleID]roles.Role{}
	err := s.db.View(ctx, func(tx Tx) error {
		rs, err := tx.ListRoles(ctx)
		if err != nil {
			return err
		}
		for _, r := range rs {
			out[r.ID] = r
		}
		var later []audit.Event
		for after := int64(0); ; {
			es, err := tx.ListAudit(ctx, audit.Filter{Type: audit.RoleChanged, From: at.Add(time.Nanosecond), AfterSeq: after, Limit: 1000})
			if err != nil {
				return err
			}
			later = append(later, es...)
			if len(es) < 1000 {
				break
			}
			after = es[len(es)-1].Seq
		}
		for _, e := range slices.Backward(later) {
			if !e.At.After(at) {
				continue
			}
			id, old, err := roleBefore(e)
			if err != nil {
				return err
			}
			if old.ID == "" {
				delete(out, id)
			} else {
				old.BuiltIn = out[id].BuiltIn
				out[id] = old
			}
		}
		return nil
	})
	return out, err
}

// roleBefore reads the definition a role.changed event replaced; a zero
// role when the event created it.
func roleBefore(e audit.Event) (opgate.RoleID, roles.Role, error) {
	id, ok := strings.CutPrefix(e.Resource, "role:")
	if !ok {
		return "", roles.Role{}, fmt.Errorf("authz: role.changed event %d names %q", e.Seq, e.Resource)
	}
	var d struct {
		Old *struct {
			Name          string              `json:"name"`
			Permissions   []opgate.Permission `json:"permissions"`
			ConflictsWith []opgate.RoleID     `json:"conflicts_with"`
		} `json:"old"`
	}
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return opgate.RoleID(id), roles.Role{}, fmt.Errorf("authz: role.changed event %d: %w", e.Seq, err)
	}
	if d.Old == nil {
		return opgate.RoleID(id), roles.Role{}, nil
	}
	return opgate.RoleID(id), roles.Role{ID: opgate.RoleID(id), Name: d.Old.Name, Permissions: d.Old.Permissions, ConflictsWith: d.Old.ConflictsWith}, nil
}
