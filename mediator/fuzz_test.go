package mediator

import (
	"reflect"
	"strings"
	"testing"

	"github.com/nyaruka/gocommon/i18n"
)

// Phone values come from registry clerks: whatever they hold, a mapped
// contact carries only E.164 tel URNs, each once.
func FuzzMapPhone(f *testing.F) {
	for _, seed := range []string{"0777 123 456", "+231-777-123-456", "777123456/886123456", "00231888097810", "44.44.44", "", "abc", "(+231) 0886-609-940", "0000000000000000000000", "+", "00", "/,;"} {
		f.Add(seed, "LR")
	}
	f.Add("555-777-4945", "US")
	f.Add("0777123456", "")
	f.Fuzz(func(t *testing.T, phone, country string) {
		if len(country) != 2 && country != "" {
			return // the command line rejects other countries before mapping
		}
		m := Mapper{Country: i18n.Country(strings.ToUpper(country))}.Map(phoneProvider(phone))
		seen := map[string]bool{}
		for _, u := range m.Contact.URNs {
			if !strings.HasPrefix(u, "tel:+") || seen[u] {
				t.Fatalf("phone %q: urns %q", phone, m.Contact.URNs)
			}
			seen[u] = true
		}
		if (m.Skipped == "") != (len(m.Contact.URNs) > 0) {
			t.Fatalf("phone %q: skipped %q with urns %q", phone, m.Skipped, m.Contact.URNs)
		}
	})
}

// Console config arrives from OpenHIM: it is either applied as valid
// settings or refused with the current settings kept.
func FuzzConsoleConfig(f *testing.F) {
	base := Settings{
		OpenInfoMan:    OpenInfoManSettings{URL: "http://openinfoman:8984", Document: "Providers", PageSize: 500},
		RapidPro:       RapidProSettings{URL: "https://rapidpro.example.org", Token: "secret-token", Group: "mHero"},
		InactivePolicy: InactiveRemoveFromGroup,
	}
	for _, seed := range []string{`{}`, `OK`, `""`, `null`, `[]`, `{"inactivePolicy": "block"}`,
		`{"rapidpro": {"group": "Health Workers", "token": ""}, "openinfoman": {"pageSize": 1e9}}`,
		`{"openinfoman": {"pageSize": "500"}}`, `{"rapidpro": {"country": "lr"}}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := base.WithConsoleConfig(raw)
		if err != nil {
			if !reflect.DeepEqual(got, base) {
				t.Fatalf("refused config changed the settings: %+v", got)
			}
			if strings.Contains(err.Error(), "secret-token") {
				t.Fatalf("error carries the token: %v", err)
			}
			return
		}
		if verr := got.Validate(); verr != nil {
			t.Fatalf("accepted settings are invalid: %v", verr)
		}
	})
}
