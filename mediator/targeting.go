package mediator

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nyaruka/gocommon/i18n"
	"github.com/nyaruka/gocommon/stringsx"
	"golang.org/x/text/language"

	"github.com/openhie/mhero-mediator/csd"
	"github.com/openhie/mhero-mediator/rapidpro"
)

// Targeting field names: what each targeting field holds. Their RapidPro
// keys and labels are configurable (TargetingSettings.Fields).
const (
	TargetCadre      = "cadre"
	TargetFacility   = "facility"
	TargetFacilityID = "facility_id"
	TargetDistrict   = "district"
	TargetSpecialty  = "specialty"
)

// targetNames lists the targeting fields in the order they are reported.
var targetNames = []string{TargetCadre, TargetFacility, TargetFacilityID, TargetDistrict, TargetSpecialty}

// defaultTargetLabels are the RapidPro field labels used unless configured;
// RapidPro derives each key from its label (rapidpro.FieldKey).
var defaultTargetLabels = map[string]string{
	TargetCadre: "Cadre", TargetFacility: "Facility", TargetFacilityID: "Facility ID",
	TargetDistrict: "District", TargetSpecialty: "Specialty",
}

// maxFieldLength is the longest field value RapidPro keeps, in characters.
const maxFieldLength = 640

// DefaultDistrictLevel is the organization level whose name is the
// district: level 1 is the root (the country).
const DefaultDistrictLevel = 2

// Counts of references and hierarchies that did not resolve, by kind; they
// are reported, never fatal: real exports are full of them.
const (
	TargetDanglingFacility     = "dangling_facility"
	TargetDanglingOrganization = "dangling_organization"
	TargetDanglingParent       = "dangling_parent"
	TargetHierarchyCycle       = "hierarchy_cycle"
	TargetNoDistrict           = "no_district"
)

// Place is what is kept of a facility or organization: enough to resolve a
// provider's references to names and to a district.
type Place struct {
	ID     string   `json:"i,omitempty"` // the entity id as the directory writes it
	Name   string   `json:"n,omitempty"`
	Parent string   `json:"p,omitempty"` // the parent organization's key
	Orgs   []string `json:"o,omitempty"` // a facility's organization keys
	Codes  []string `json:"c,omitempty"` // codedType codes, to pick the district level by type
}

func placeOf(e *csd.Entity) Place {
	p := Place{ID: strings.TrimSpace(e.EntityID), Name: strings.Join(strings.Fields(e.Name), " "), Parent: csd.NormalizeID(e.Parent)}
	for _, o := range e.Organizations {
		if k := csd.NormalizeID(o); k != "" {
			p.Orgs = append(p.Orgs, k)
		}
	}
	for _, c := range e.CodedTypes {
		if code := strings.TrimSpace(c.Code); code != "" {
			p.Codes = append(p.Codes, code)
		}
	}
	return p
}

func (p Place) equal(o Place) bool {
	return p.ID == o.ID && p.Name == o.Name && p.Parent == o.Parent && slices.Equal(p.Orgs, o.Orgs) && slices.Equal(p.Codes, o.Codes)
}

// Directory is the facility and organization directories reduced to places,
// keyed by csd.NormalizeID.
type Directory struct {
	Facilities    map[string]Place
	Organizations map[string]Place
}

// NewDirectory returns an empty directory.
func NewDirectory() *Directory {
	return &Directory{Facilities: map[string]Place{}, Organizations: map[string]Place{}}
}

// Add records an entity of the given kind and tells whether what a
// provider resolves to through it may have changed (a new or changed place).
func (d *Directory) Add(kind csd.EntityKind, e *csd.Entity) bool {
	key := csd.NormalizeID(e.EntityID)
	if key == "" {
		return false
	}
	into := d.Facilities
	if kind == csd.KindOrganization {
		into = d.Organizations
	}
	p := placeOf(e)
	if old, ok := into[key]; ok && old.equal(p) {
		return false
	}
	into[key] = p
	return true
}

// Targeting resolves the fields officials target by from a provider and the
// directories. It counts what did not resolve; it is not safe for
// concurrent use.
type Targeting struct {
	Settings  TargetingSettings
	Directory *Directory
	// CadreNames maps cadre codes to display names (an SVS value set), for
	// documents that carry codes only.
	CadreNames map[string]string
	// Counts of unresolved references, by the Target* kinds above.
	Counts map[string]int
	// off holds the keys of targeting fields not to write (RapidPro holds
	// them with another type).
	off map[string]bool
}

// fieldKeys lists the RapidPro field keys written, with their labels.
func (t *Targeting) fieldKeys() []FieldSpec {
	var out []FieldSpec
	for _, name := range targetNames {
		if spec := t.Settings.field(name); !t.off[spec.Key] {
			out = append(out, spec)
		}
	}
	return out
}

// keys lists the RapidPro keys of the targeting fields written.
func (t *Targeting) keys() []string {
	var out []string
	for _, f := range t.fieldKeys() {
		out = append(out, f.Key)
	}
	return out
}

func (t *Targeting) count(kind string) {
	if t.Counts == nil {
		t.Counts = map[string]int{}
	}
	t.Counts[kind]++
}

// resolve returns the targeting fields by RapidPro key (every written key,
// empty when nothing resolved, so that a stale value is cleared) and the
// contact language ("" to leave it alone).
func (t *Targeting) resolve(p *csd.Provider) (map[string]string, string) {
	dir := t.Directory
	if dir == nil {
		dir = NewDirectory()
	}
	values := map[string]string{TargetCadre: t.cadre(p), TargetSpecialty: specialties(p.Specialties)}
	var facilityOrgs []string
	for _, ref := range p.Facilities {
		f, ok := dir.Facilities[csd.NormalizeID(ref)]
		if !ok {
			t.count(TargetDanglingFacility)
			continue
		}
		if values[TargetFacility] == "" && values[TargetFacilityID] == "" {
			// The directory's own spelling of the id, so that one facility
			// has one facility_id however its providers wrote it.
			values[TargetFacility], values[TargetFacilityID] = f.Name, f.ID
			facilityOrgs = f.Orgs
		}
	}
	var orgs []string
	for _, ref := range p.Organizations {
		orgs = append(orgs, csd.NormalizeID(ref))
	}
	if len(orgs)+len(facilityOrgs) > 0 {
		values[TargetDistrict] = t.district(append(orgs, facilityOrgs...))
	}
	out := map[string]string{}
	for _, name := range targetNames {
		if key := t.Settings.field(name).Key; !t.off[key] {
			// RapidPro cuts longer values silently, which would read back
			// as a change on every comparison.
			out[key] = stringsx.Truncate(values[name], maxFieldLength)
		}
	}
	return out, contactLanguage(p.Languages)
}

// cadre is the provider's type: the first codedType, or the first in the
// configured coding scheme, by its display text, else its value set name,
// else its code.
func (t *Targeting) cadre(p *csd.Provider) string {
	for _, c := range p.CodedTypes {
		if s := t.Settings.CadreScheme; s != "" && !strings.EqualFold(strings.TrimSpace(c.CodingScheme), s) {
			continue
		}
		code := strings.TrimSpace(c.Code)
		if d := strings.Join(strings.Fields(c.Display), " "); d != "" {
			return d
		}
		if name := t.CadreNames[code]; name != "" {
			return name
		}
		return code
	}
	return ""
}

// specialties joins the provider's specialties, sorted, so the value does
// not change when the registry reorders them.
func specialties(codes []csd.Code) string {
	var names []string
	for _, c := range codes {
		name := strings.Join(strings.Fields(c.Display), " ")
		if name == "" {
			name = strings.TrimSpace(c.Code)
		}
		if name != "" && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// district is the name of the district-level organization above the first
// of orgs that has one: the provider's own organizations come first, then
// its facility's.
func (t *Targeting) district(orgs []string) string {
	for _, key := range orgs {
		if name, ok := t.districtOf(key); ok {
			return name
		}
	}
	t.count(TargetNoDistrict)
	return ""
}

// districtOf walks up the parent links from an organization. With a
// district code, the first organization carrying it is the district;
// otherwise the organization at the configured level, counted from the root.
func (t *Targeting) districtOf(key string) (string, bool) {
	orgs := t.Directory.Organizations
	var chain []Place // from key up to the root
	seen := map[string]bool{}
	for key != "" {
		if seen[key] {
			t.count(TargetHierarchyCycle)
			return "", false
		}
		seen[key] = true
		p, ok := orgs[key]
		if !ok {
			if len(chain) == 0 {
				t.count(TargetDanglingOrganization)
			} else {
				t.count(TargetDanglingParent)
			}
			return "", false
		}
		if code := t.Settings.DistrictCode; code != "" && slices.ContainsFunc(p.Codes, func(c string) bool { return strings.EqualFold(c, code) }) {
			return p.Name, true
		}
		chain = append(chain, p)
		key = p.Parent
	}
	if t.Settings.DistrictCode != "" {
		return "", false
	}
	level := t.Settings.districtLevel()
	if len(chain) < level {
		return "", false // a flat hierarchy, or an organization above the district
	}
	return chain[len(chain)-level].Name, true
}

// contactLanguage is the first of the provider's languages that is a
// language RapidPro accepts (ISO 639-3), whatever form the registry wrote
// it in (en, en-GB, eng); "" leaves the contact's language alone.
func contactLanguage(langs []csd.Code) string {
	for _, l := range langs {
		tag, err := language.Parse(strings.TrimSpace(l.Code))
		if err != nil {
			continue
		}
		base, confidence := tag.Base()
		if confidence == language.No {
			continue
		}
		if iso, err := i18n.ParseLanguage(base.ISO3()); err == nil && iso != "und" {
			return string(iso)
		}
	}
	return ""
}

// FieldSpec is a RapidPro contact field this service writes.
type FieldSpec struct {
	Key   string `json:"key"`
	Label string `json:"label"`
}

// TargetingSettings say where the directories are and how a provider's
// fields are resolved and named.
type TargetingSettings struct {
	// FacilitiesDocument and OrganizationsDocument are the OpenInfoMan
	// documents holding the directories; empty means the providers' document.
	FacilitiesDocument    string `json:"facilitiesDocument"`
	OrganizationsDocument string `json:"organizationsDocument"`
	// CadreScheme picks the provider codedType whose coding scheme it is;
	// empty takes the first.
	CadreScheme string `json:"cadreScheme"`
	// DistrictLevel is the organization level named in the district field
	// (1 is the root); 0 means DefaultDistrictLevel.
	DistrictLevel int `json:"districtLevel"`
	// DistrictCode, when set, picks the district as the first organization
	// up the hierarchy with this codedType code (DHIS2 exports code the
	// org-unit level there), instead of by level.
	DistrictCode string `json:"districtCode"`
	// Fields overrides the key and label of a targeting field, by name
	// (cadre, facility, facility_id, district, specialty).
	Fields map[string]FieldSpec `json:"fields"`
}

func (t TargetingSettings) districtLevel() int {
	if t.DistrictLevel <= 0 {
		return DefaultDistrictLevel
	}
	return t.DistrictLevel
}

// field is the key and label of a targeting field, configured or default.
func (t TargetingSettings) field(name string) FieldSpec {
	spec := t.Fields[name]
	if spec.Label == "" {
		spec.Label = defaultTargetLabels[name]
	}
	if spec.Key == "" {
		spec.Key = rapidpro.FieldKey(spec.Label)
	}
	return spec
}

// Validate checks the targeting settings alone, as Settings.Validate does.
func (t TargetingSettings) Validate() error {
	if problems := t.validate(); len(problems) > 0 {
		return fmt.Errorf("targeting: %s", strings.Join(problems, "; "))
	}
	return nil
}

// validate checks what RapidPro would refuse or what would clash: unknown
// names, keys RapidPro cannot derive from the label, and two fields on one
// key.
func (t TargetingSettings) validate() []string {
	var problems []string
	for name := range t.Fields {
		if _, ok := defaultTargetLabels[name]; !ok {
			problems = append(problems, fmt.Sprintf("targeting field %q is not one of %s", name, strings.Join(targetNames, ", ")))
		}
	}
	used := map[string]string{rapidpro.FieldKey(FieldGlobalID): FieldGlobalID}
	for _, name := range targetNames {
		spec := t.field(name)
		if msg := fieldNameProblem(spec.Label); msg != "" {
			problems = append(problems, fmt.Sprintf("targeting field %s: label %q %s", name, spec.Label, msg))
		}
		if spec.Key != rapidpro.FieldKey(spec.Label) {
			problems = append(problems, fmt.Sprintf("targeting field %s: RapidPro derives the key %q from the label %q, not %q", name, rapidpro.FieldKey(spec.Label), spec.Label, spec.Key))
		}
		if other, dup := used[spec.Key]; dup {
			problems = append(problems, fmt.Sprintf("targeting fields %s and %s share the key %q", other, name, spec.Key))
		}
		used[spec.Key] = name
	}
	if t.DistrictLevel < 0 {
		problems = append(problems, fmt.Sprintf("district level %d is below 1", t.DistrictLevel))
	}
	return problems
}

// fieldNameProblem says why RapidPro would refuse a field label: at most 36
// letters, digits, hyphens and spaces, not starting or ending with a space,
// and with a key that is not reserved.
func fieldNameProblem(label string) string {
	switch {
	case label == "" || len([]rune(label)) > 36:
		return "must have 1 to 36 characters"
	case strings.TrimSpace(label) != label:
		return "must not start or end with a space"
	case strings.ContainsFunc(label, func(r rune) bool {
		return !(r == ' ' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}):
		return "may hold only letters, digits, hyphens and spaces"
	case slices.Contains([]string{"has", "is", "fields", "urns", "created_on", "last_seen_on"}, rapidpro.FieldKey(label)):
		return "gives a key RapidPro reserves"
	case slices.Contains([]string{"id", "uuid", "name", "language", "group", "urn", "tel"}, rapidpro.FieldKey(label)):
		// RapidPro's contact search reads these as the contact's own
		// attributes: officials could not select by such a field.
		return "gives a key RapidPro's contact search reads as a contact attribute"
	case rapidpro.FieldKey(label) == "" || rapidpro.FieldKey(label)[0] < 'a' || rapidpro.FieldKey(label)[0] > 'z':
		return "must start with a letter"
	}
	return ""
}

func (t TargetingSettings) facilitiesDocument(s Settings) string {
	if t.FacilitiesDocument != "" {
		return t.FacilitiesDocument
	}
	return s.OpenInfoMan.Document
}

func (t TargetingSettings) organizationsDocument(s Settings) string {
	if t.OrganizationsDocument != "" {
		return t.OrganizationsDocument
	}
	return s.OpenInfoMan.Document
}
