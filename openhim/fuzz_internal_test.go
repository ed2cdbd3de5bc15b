package openhim

import (
	"encoding/json"
	"testing"
)

func TestHeartbeatConfig(t *testing.T) {
	for _, tc := range []struct {
		body    string
		want    string // "" = no change
		wantErr bool
	}{
		{"", "", false},
		{"  \n", "", false},
		{"OK", "", false},
		{"null", "", false},
		{"[]", "", false},
		{`"config"`, "", false},
		{"42", "", false},
		{"{}", "{}", false},
		{` {"watermark":"2024-05-01T06:20:00Z"} `, `{"watermark":"2024-05-01T06:20:00Z"}`, false},
		{`{"watermark":`, "", true},
	} {
		got, err := heartbeatConfig([]byte(tc.body))
		if string(got) != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("heartbeatConfig(%q) = %q, %v; want %q (error %v)", tc.body, got, err, tc.want, tc.wantErr)
		}
	}
}

func FuzzHeartbeatConfig(f *testing.F) {
	for _, s := range []string{"", "OK", "null", "[]", "{}", `{"a":{"b":[1,2]}}`, `{"a":`, "\ufeff{}", " {} x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		cfg, err := heartbeatConfig(body)
		if err != nil || cfg == nil {
			return
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(cfg, &obj) != nil {
			t.Errorf("heartbeatConfig(%q) returned %q, not a JSON object", body, cfg)
		}
	})
}

func FuzzResponseJSON(f *testing.F) {
	for _, s := range []string{
		`{"x-mediator-urn":"u","status":"Successful","response":{"status":200,"body":"b","timestamp":"2024-05-01T06:31:10.402Z"}}`,
		`{"response":{"status":"202","timestamp":1714544400000},"orchestrations":[{"name":"n","request":{"timestamp":"2024-05-01T06:20:00Z"}}]}`,
		`{"response":{"status":1e400}}`, `{"response":{"timestamp":-1e300}}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r Response
		if json.Unmarshal(body, &r) != nil {
			return
		}
		_ = r.Validate()
		raw, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("decoded %q but cannot encode it: %v", body, err)
		}
		var back Response
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatalf("re-decoding %s: %v", raw, err)
		}
	})
}
