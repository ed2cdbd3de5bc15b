package mediator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/openhie/mhero-mediator/rapidpro"
)

// bootstrapKey identifies the settings a bootstrap was made for. The token
// is in it because another token may mean another workspace; only a digest
// of it reaches the state file.
func bootstrapKey(settings Settings) string {
	parts := []string{"bootstrap", settings.RapidPro.URL, settings.RapidPro.Token, settings.RapidPro.Group, settings.RapidPro.Country}
	for _, f := range (&Targeting{Settings: settings.Targeting}).fieldKeys() {
		parts = append(parts, f.Key, f.Label)
	}
	return digestOf(parts...)
}

func (b bootstrap) summary() string {
	s := fmt.Sprintf("workspace %s, group %q, country %q, set up %s", b.WorkspaceUUID, b.GroupName, b.Country, b.At.Format(time.RFC3339))
	if len(b.Planned) > 0 {
		s += "; a sync would first create " + strings.Join(b.Planned, ", ")
	}
	if len(b.FieldProblems) > 0 {
		s += "; " + strings.Join(b.FieldProblems, "; ")
	}
	return s
}

// setUp returns the workspace, the managed group and its country, from the
// state's cache when it was made for these settings, else by reading the
// workspace and making sure the group and the fields this service writes
// exist (RapidPro never creates them on the fly). refresh skips the cache;
// dry creates nothing, and lists what a sync would create.
func (s *Syncer) setUp(ctx context.Context, rp *rapidpro.Client, settings Settings, ph *Phase, refresh, dry bool) (bootstrap, error) {
	key := bootstrapKey(settings)
	cached, found, err := s.opts.State.bootstrap()
	if err != nil {
		return bootstrap{}, err
	}
	if found && cached.Key == key && !refresh {
		return cached, nil
	}
	before := rp.Sent()
	defer func() { ph.Requests += int(rp.Sent() - before) }()
	ws, err := rp.Workspace(ctx)
	if err != nil {
		return bootstrap{}, fmt.Errorf("workspace: %w", err)
	}
	b := bootstrap{Key: key, WorkspaceUUID: ws.UUID, Country: settings.RapidPro.Country, At: s.opts.Now().UTC()}
	if b.Country == "" {
		b.Country = strings.ToUpper(ws.Country)
	}
	var group rapidpro.Group
	if dry {
		var ok bool
		if group, ok, err = rp.GroupByName(ctx, settings.RapidPro.Group); err == nil && !ok {
			b.Planned = append(b.Planned, fmt.Sprintf("the group %q", settings.RapidPro.Group))
		}
	} else {
		group, err = rp.EnsureGroup(ctx, settings.RapidPro.Group)
	}
	if err != nil {
		return bootstrap{}, fmt.Errorf("group %q: %w", settings.RapidPro.Group, err)
	}
	b.GroupUUID, b.GroupName, b.GroupCount = group.UUID, group.Name, group.Count
	fields, err := rp.Fields(ctx)
	if err != nil {
		return bootstrap{}, fmt.Errorf("fields: %w", err)
	}
	want := append([]FieldSpec{{Key: FieldGlobalID, Label: FieldGlobalID}}, (&Targeting{Settings: settings.Targeting}).fieldKeys()...)
	for i, spec := range want {
		at := slices.IndexFunc(fields, func(f rapidpro.Field) bool { return f.Key == spec.Key })
		switch {
		case at >= 0 && fields[at].Type != "" && fields[at].Type != "text":
			// An operator's field of another type is theirs: reported and
			// left out of every write, never changed.
			if i == 0 {
				return bootstrap{}, fmt.Errorf("field %q is of type %s in RapidPro; this service needs it as text", spec.Key, fields[at].Type)
			}
			b.Off = append(b.Off, spec.Key)
			b.FieldProblems = append(b.FieldProblems, fmt.Sprintf("field %q is of type %s in RapidPro, not text: not written", spec.Key, fields[at].Type))
			s.opts.Logger.Warn("a targeting field exists in RapidPro with another type: it is left alone and not written", "field", spec.Key, "type", fields[at].Type)
		case at >= 0:
		case dry:
			b.Planned = append(b.Planned, fmt.Sprintf("the field %q", spec.Key))
		default:
			if _, err := rp.CreateField(ctx, spec.Label, "text"); err != nil {
				return bootstrap{}, fmt.Errorf("field %q: %w", spec.Key, err)
			}
		}
	}
	if dry {
		return b, nil
	}
	if err := s.opts.State.setBootstrap(&b); err != nil {
		return bootstrap{}, err
	}
	return b, nil
}
