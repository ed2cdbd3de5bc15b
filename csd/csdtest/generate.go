package csdtest

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/openhie/mhero-mediator/csd"
)

// GenerateOptions shape a synthetic document. Provider i (0-based) has
// record@created = Start + i·Step and record@updated = Start + i·Step + Step/2,
// so an updated filter at Start + k·Step keeps exactly providers k … n-1.
type GenerateOptions struct {
	// Seed varies ids, names and phones; the same seed writes the same document.
	Seed uint64
	// Start is when provider 0 was created; zero means 2020-01-01T00:00:00Z.
	Start time.Time
	// Step separates consecutive providers; zero means one hour.
	Step time.Duration
	// Hierarchy also writes what the providers' facility references resolve
	// to: an organizationDirectory of one country (GeneratedCountryID),
	// GeneratedDistricts districts under it and GeneratedChiefdoms chiefdoms
	// (chiefdom c under district c mod GeneratedDistricts), linked by parent,
	// and a facilityDirectory of GeneratedFacilities facilities (facility k
	// in chiefdom k mod GeneratedChiefdoms, through organizations/
	// organization: a CSD 2013 facility has no parent). Every entity was
	// created and updated at Start. Without it both directories are empty.
	Hierarchy bool

	// Reachable makes every provider an active health worker with one
	// business phone, and one in GeneratedSecondPhoneCycle a second, each
	// phone distinct from every other provider's and spelt in one of the
	// national ways (0777 123 456, 0777123456, +231 777 123 456,
	// 00231777123456): every provider becomes a contact.
	Reachable bool
	// Updated, when set, is every provider's record@updated instead of
	// created + Step/2: a registry that saved every record again without
	// changing its data.
	Updated time.Time
	// Changed gives providers 0 … Changed-1 another surname (shifted by
	// Revision through the list of surnames; 0 means 1, so that a later
	// revision changes the same providers again), with record@updated at
	// ChangedAt when that is set. Ids, forenames and phones stay as they
	// were.
	Changed   int
	Revision  int
	ChangedAt time.Time
}

// Shapes of the generated providers, fixed so that tests can count them.
const (
	// GeneratedFacilities is how many distinct facilities are referenced:
	// provider i points to facility i mod GeneratedFacilities.
	GeneratedFacilities = 50
	// Provider i has i mod 3 business phones (BP), and always one FAX.
	generatedPhoneCycle = 3
	// Provider i is inactive (106-002) when i mod 10 == 9.
	generatedInactiveCycle = 10
	// GeneratedSecondPhoneCycle: with Reachable, provider i has a second
	// phone when i mod 10 < 3.
	GeneratedSecondPhoneCycle = 10
	generatedSecondPhones     = 3
	// GeneratedDistricts and GeneratedChiefdoms size the hierarchy that
	// GenerateOptions.Hierarchy writes.
	GeneratedDistricts = 4
	GeneratedChiefdoms = 12
	// GeneratedCountryID is the root of that hierarchy.
	GeneratedCountryID = "urn:uuid:0c000000-0000-4000-8000-000000000000"
	// generatedOrgScheme codes an organization's level in the hierarchy.
	generatedOrgScheme = "urn:mhero:test:orgunit-level"
)

var (
	forenames = []string{"Musu", "Joseph", "Hélène", "Fatu", "Emmanuel", "Comfort", "Mamadou", "Grace", "Jallah", "Mary"}
	surnames  = []string{"Kollie", "Johnson", "Diallo", "Flomo", "Kamara", "Doe", "Sirleaf", "Togba", "Mensah", "Wolo"}
	cadres    = []csd.Code{
		{Code: "CHW", CodingScheme: "urn:mhero:cadre", Display: "Community Health Worker"},
		{Code: "105-003", CodingScheme: "1.3.6.1.4.1.21367.100.1", Display: "Nurse Practitioner"},
		{Code: "105-001", CodingScheme: "1.3.6.1.4.1.21367.100.1", Display: "Certified Nurse Midwife"},
		{Code: "PPS", CodingScheme: "urn:mhero:cadre", Display: "Physician Assistant"},
	}
	languages     = []csd.Code{{Code: "en", CodingScheme: "BCP 47", Display: "English"}, {Code: "fr", CodingScheme: "BCP 47", Display: "French"}}
	activeStatus  = []string{"Active", "106-001", "active"}
	phonePrefixes = []string{"0777", "0886", "0555", "0770"}
)

// GeneratedEntityID is the entityID Generate gives provider i for seed.
func GeneratedEntityID(seed uint64, i int) string {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	// The index in the last group keeps ids distinct whatever the seed.
	return fmt.Sprintf("urn:uuid:%08x-%04x-4%03x-%04x-%012x", r.Uint32(), r.Uint32()&0xffff, r.Uint32()&0xfff, 0x8000|r.Uint32()&0x3fff, i)
}

// GeneratedFacilityID is the entityID of the k-th referenced facility.
func GeneratedFacilityID(k int) string {
	return fmt.Sprintf("urn:uuid:0f000000-0000-4000-8000-%012x", k)
}

// GeneratedDistrictID is the entityID of district d of the hierarchy.
func GeneratedDistrictID(d int) string {
	return fmt.Sprintf("urn:uuid:0d000000-0000-4000-8000-%012x", d)
}

// GeneratedChiefdomID is the entityID of chiefdom c of the hierarchy.
func GeneratedChiefdomID(c int) string {
	return fmt.Sprintf("urn:uuid:0e000000-0000-4000-8000-%012x", c)
}

// Generate writes a CSD document of n providers to w as it goes, never
// holding the document, so it can feed benchmarks of any size.
func Generate(w io.Writer, n int, opts GenerateOptions) error {
	if n < 0 {
		return fmt.Errorf("csdtest: cannot generate %d providers", n)
	}
	if opts.Reachable && 2*n > distinctNumbers {
		return fmt.Errorf("csdtest: cannot give %d reachable providers distinct phones", n)
	}
	if opts.Start.IsZero() {
		opts.Start = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if opts.Step == 0 {
		opts.Step = time.Hour
	}
	sw := &stickyWriter{w: w}
	bw := bufio.NewWriterSize(sw, 64<<10)
	if opts.Hierarchy {
		fmt.Fprintf(bw, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CSD xmlns=%q>\n", csd.Namespace)
		writeHierarchy(bw, opts.Start)
		bw.WriteString("  <providerDirectory>\n")
	} else {
		// Unchanged, byte for byte, from before Hierarchy existed.
		fmt.Fprintf(bw, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CSD xmlns=%q>\n  <organizationDirectory/>\n  <serviceDirectory/>\n  <facilityDirectory/>\n  <providerDirectory>\n", csd.Namespace)
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0x6d6865726f))
	for i := range n {
		if sw.err != nil {
			return fmt.Errorf("csdtest: writing provider %d: %w", i, sw.err)
		}
		writeProvider(bw, i, rng, opts)
	}
	bw.WriteString("  </providerDirectory>\n</CSD>\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("csdtest: writing the document: %w", err)
	}
	return nil
}

func writeProvider(w *bufio.Writer, i int, rng *rand.Rand, opts GenerateOptions) {
	forename, s := forenames[rng.IntN(len(forenames))], rng.IntN(len(surnames))
	cadre := cadres[rng.IntN(len(cadres))]
	lang := languages[rng.IntN(len(languages))]
	created := opts.Start.Add(time.Duration(i) * opts.Step)
	updated := created.Add(opts.Step / 2)
	if !opts.Updated.IsZero() {
		updated = opts.Updated
	}
	if i < opts.Changed {
		// Shifting the index already drawn keeps the rng's sequence, so
		// every other provider stays as it was.
		s += max(opts.Revision, 1)
		if !opts.ChangedAt.IsZero() {
			updated = opts.ChangedAt
		}
	}
	surname := surnames[s%len(surnames)]
	status := activeStatus[i%len(activeStatus)]
	if i%generatedInactiveCycle == generatedInactiveCycle-1 && !opts.Reachable {
		status = "106-002"
	}

	fmt.Fprintf(w, "    <provider entityID=%q>\n", GeneratedEntityID(opts.Seed, i))
	fmt.Fprintf(w, "      <otherID code=\"payroll\" assigningAuthorityName=\"urn:mhero:test:hris\">P%07d</otherID>\n", i)
	fmt.Fprintf(w, "      <codedType code=%q codingScheme=%q>%s</codedType>\n", cadre.Code, cadre.CodingScheme, cadre.Display)
	w.WriteString("      <demographic>\n        <name>\n")
	fmt.Fprintf(w, "          <commonName>%s %s</commonName>\n          <forename>%s</forename>\n          <surname>%s</surname>\n", forename, surname, forename, surname)
	w.WriteString("        </name>\n")
	if opts.Reachable {
		writeContact(w, csd.ContactPhone, distinctNumber(2*i, rng))
		if i%GeneratedSecondPhoneCycle < generatedSecondPhones {
			writeContact(w, csd.ContactPhone, distinctNumber(2*i+1, rng))
		}
	} else {
		for range i % generatedPhoneCycle {
			writeContact(w, csd.ContactPhone, localNumber(rng))
		}
	}
	writeContact(w, csd.ContactFax, localNumber(rng))
	w.WriteString("      </demographic>\n")
	fmt.Fprintf(w, "      <language code=%q codingScheme=%q>%s</language>\n", lang.Code, lang.CodingScheme, lang.Display)
	fmt.Fprintf(w, "      <facilities>\n        <facility entityID=%q/>\n      </facilities>\n", GeneratedFacilityID(i%GeneratedFacilities))
	fmt.Fprintf(w, "      <record created=%q updated=%q status=%q sourceDirectory=\"http://hris.example.org\"/>\n",
		created.UTC().Format(time.RFC3339), updated.UTC().Format(time.RFC3339), status)
	w.WriteString("    </provider>\n")
}

// writeHierarchy writes the organization, service and facility directories
// that GenerateOptions.Hierarchy describes.
func writeHierarchy(w *bufio.Writer, at time.Time) {
	record := fmt.Sprintf("<record created=%[1]q updated=%[1]q status=\"Active\"/>", at.UTC().Format(time.RFC3339))
	org := func(id, level, display, name, parent string) {
		fmt.Fprintf(w, "    <organization entityID=%q>\n      <codedType code=%q codingScheme=%q>%s</codedType>\n      <primaryName>%s</primaryName>\n", id, level, generatedOrgScheme, display, name)
		if parent != "" {
			fmt.Fprintf(w, "      <parent entityID=%q/>\n", parent)
		}
		fmt.Fprintf(w, "      %s\n    </organization>\n", record)
	}
	w.WriteString("  <organizationDirectory>\n")
	org(GeneratedCountryID, "country", "Country", "Testland", "")
	for d := range GeneratedDistricts {
		org(GeneratedDistrictID(d), "district", "District", fmt.Sprintf("District %d", d), GeneratedCountryID)
	}
	for c := range GeneratedChiefdoms {
		org(GeneratedChiefdomID(c), "chiefdom", "Chiefdom", fmt.Sprintf("Chiefdom %d", c), GeneratedDistrictID(c%GeneratedDistricts))
	}
	w.WriteString("  </organizationDirectory>\n  <serviceDirectory/>\n  <facilityDirectory>\n")
	for k := range GeneratedFacilities {
		// Accented names keep UTF-8 in every test that uses the hierarchy.
		fmt.Fprintf(w, "    <facility entityID=%q>\n      <codedType code=\"clinic\" codingScheme=\"urn:mhero:test:facility-type\">Clinic</codedType>\n      <primaryName>Centre de santé %d</primaryName>\n", GeneratedFacilityID(k), k)
		fmt.Fprintf(w, "      <organizations>\n        <organization entityID=%q/>\n      </organizations>\n      %s\n    </facility>\n", GeneratedChiefdomID(k%GeneratedChiefdoms), record)
	}
	w.WriteString("  </facilityDirectory>\n")
}

func writeContact(w *bufio.Writer, code, value string) {
	fmt.Fprintf(w, "        <contactPoint>\n          <codedType code=%q codingScheme=\"urn:ihe:iti:csd:2013:contactPoint\">%s</codedType>\n        </contactPoint>\n", code, value)
}

// localNumber writes a Liberian-style local number in one of the spellings
// found in real exports.
func localNumber(rng *rand.Rand) string {
	prefix, a, b := phonePrefixes[rng.IntN(len(phonePrefixes))], rng.IntN(1000), rng.IntN(1000)
	switch rng.IntN(3) {
	case 0:
		return fmt.Sprintf("%s %03d %03d", prefix, a, b)
	case 1:
		return fmt.Sprintf("%s%03d%03d", prefix, a, b)
	}
	return fmt.Sprintf("+231-%s-%03d-%03d", prefix[1:], a, b)
}

// distinctNumbers is how many numbers distinctNumber spells: a local
// number of six digits under each of the phonePrefixes.
const distinctNumbers = 1_000_000 * 4

// distinctNumber is the k-th of distinctNumbers Liberian mobile numbers, in
// one of the national spellings. Multiplying by a number prime to
// distinctNumbers spreads consecutive k over the prefixes and digits while
// never giving two k (below distinctNumbers) the same number.
func distinctNumber(k int, rng *rand.Rand) string {
	m := k * 7919 % distinctNumbers
	prefix, a, b := phonePrefixes[m/1_000_000], m/1000%1000, m%1000
	switch rng.IntN(4) {
	case 0:
		return fmt.Sprintf("%s %03d %03d", prefix, a, b)
	case 1:
		return fmt.Sprintf("%s%03d%03d", prefix, a, b)
	case 2:
		return fmt.Sprintf("+231 %s %03d %03d", prefix[1:], a, b)
	}
	return fmt.Sprintf("00231%s%03d%03d", prefix[1:], a, b)
}

// stickyWriter keeps the first write error so that Generate can stop early
// instead of formatting the rest of a document nobody reads.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (s *stickyWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(p)
	s.err = err
	return n, err
}
