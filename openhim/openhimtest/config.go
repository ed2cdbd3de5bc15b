package openhimtest

import "github.com/openhie/mhero-mediator/openhim"

// maskedPassword is what core's GET /mediators shows instead of a password.
const maskedPassword = "**********"

// maskPasswords replaces password values in cfg, top-level and inside
// structs, as core's GET /mediators/:urn does.
func maskPasswords(defs []openhim.ConfigDef, cfg map[string]any) {
	walkPasswords(defs, cfg, nil, func(obj map[string]any, key string, _ any) {
		if obj[key] != nil {
			obj[key] = maskedPassword
		}
	})
}

// restoreMaskedPasswords puts the stored value back wherever the console
// sent the mask, as core's setConfig does before validating.
func restoreMaskedPasswords(defs []openhim.ConfigDef, cfg, stored map[string]any) {
	walkPasswords(defs, cfg, stored, func(obj map[string]any, key string, storedValue any) {
		if obj[key] == maskedPassword {
			obj[key] = storedValue
		}
	})
}

// walkPasswords calls fn for each password param of cfg with the matching
// stored value (nil if none). Array params are left alone.
func walkPasswords(defs []openhim.ConfigDef, cfg, stored map[string]any, fn func(obj map[string]any, key string, storedValue any)) {
	for _, def := range defs {
		if def.Array {
			continue
		}
		if _, present := cfg[def.Param]; !present {
			continue
		}
		switch def.Type {
		case "password":
			fn(cfg, def.Param, stored[def.Param])
		case "struct":
			inner, _ := cfg[def.Param].(map[string]any)
			storedInner, _ := stored[def.Param].(map[string]any)
			if inner != nil {
				walkPasswords(def.Template, inner, storedInner, fn)
			}
		}
	}
}
