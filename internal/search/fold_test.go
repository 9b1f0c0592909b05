package search

import (
	"testing"
	"unicode/utf8"
)

func TestFold(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"muller", "muller"},
		{"Müller", "muller"},
		{"MÜLLER", "muller"},
		{"Mu\u0308ller", "muller"}, // decomposed
		{"Ångström", "angstrom"},
		{"Straße", "strasse"},
		{"Æsir Øre Łódź", "aesir ore lodz"},
		{"Þór", "thor"},
		{"ÿĀăĄčĚğİıŒœŠžſ", "yaaacegiioeoeszs"},
		{"5×3÷2", "5×3÷2"},
		{"ΑΒΓ", "αβγ"},       // other scripts: lower-cased only
		{"a\xffB", "a\xffb"}, // invalid UTF-8 kept
		{"Jos\u00e9 Garc\u00eda", "jose garcia"},
	} {
		if got := Fold(tc.in); got != tc.want {
			t.Errorf("Fold(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := string(appendFold(nil, []byte(tc.in))); got != tc.want {
			t.Errorf("appendFold(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Every letter of the table folds to lower-case ASCII letters.
	for r := rune(0xc0); r < 0x180; r++ {
		if r == 0xd7 || r == 0xf7 {
			continue
		}
		f := Fold(string(r))
		if f == "" || !utf8.ValidString(f) {
			t.Errorf("Fold(%q) = %q", string(r), f)
		}
		for i := 0; i < len(f); i++ {
			if f[i] < 'a' || f[i] > 'z' {
				t.Errorf("Fold(%q) = %q, not lower-case ASCII", string(r), f)
				break
			}
		}
	}
}

func TestFoldNoAlloc(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = Fold("already folded") }); n != 0 {
		t.Errorf("Fold of a folded ASCII string allocates %v times", n)
	}
}
