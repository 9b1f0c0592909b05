package search

import (
	"unicode"
	"unicode/utf8"
)

// Fold normalizes s for the default (case- and accent-insensitive)
// comparison of FHIR string search
// (https://hl7.org/fhir/R4/search.html#string): it lower-cases s and
// replaces the accented Latin letters of the Latin-1 Supplement
// (U+00C0–U+00FF) and Latin Extended-A (U+0100–U+017F) blocks by their
// base letters ("Müller" → "muller", "Ångström" → "angstrom"; ligatures
// and letters with a stroke by their usual ASCII spelling: "ß" → "ss",
// "Æ" → "ae", "Ø" → "o", "Ł" → "l", "Þ" → "th"), and drops the combining
// diacritical marks U+0300–U+036F (so decomposed "u\u0308" folds like
// precomposed "ü"). Other letters are only lower-cased (unicode.ToLower):
// this is not full Unicode normalization (no golang.org/x/text), which is
// enough for the names and addresses FHIR data mostly holds. Invalid
// UTF-8 bytes are kept as they are. An ASCII string without upper-case
// letters is returned as is, without allocating.
func Fold(s string) string {
	i := 0
	for i < len(s) {
		c := s[i]
		if c >= utf8.RuneSelf || 'A' <= c && c <= 'Z' {
			break
		}
		i++
	}
	if i == len(s) {
		return s
	}
	b := make([]byte, 0, len(s)+4)
	b = append(b, s[:i]...)
	return string(appendFold(b, s[i:]))
}

// appendFold appends Fold(s) to dst.
func appendFold[T string | []byte](dst []byte, s T) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		var rb [utf8.UTFMax]byte
		k := 0
		for k < len(rb) && i+k < len(s) {
			rb[k] = s[i+k]
			k++
		}
		r, n := utf8.DecodeRune(rb[:k])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, c)
			i++
			continue
		}
		i += n
		switch {
		case 0x300 <= r && r <= 0x36f: // combining diacritical mark
		case 0xc0 <= r && r <= 0x17f:
			dst = append(dst, foldLatin[r-0xc0]...)
		default:
			dst = utf8.AppendRune(dst, unicode.ToLower(r))
		}
	}
	return dst
}

// foldLatin is Fold of U+00C0 + i, for the Latin-1 Supplement letters
// and Latin Extended-A (× and ÷ are kept).
var foldLatin = [0x180 - 0xc0]string{
	"a",  // À U+00C0
	"a",  // Á U+00C1
	"a",  // Â U+00C2
	"a",  // Ã U+00C3
	"a",  // Ä U+00C4
	"a",  // Å U+00C5
	"ae", // Æ U+00C6
	"c",  // Ç U+00C7
	"e",  // È U+00C8
	"e",  // É U+00C9
	"e",  // Ê U+00CA
	"e",  // Ë U+00CB
	"i",  // Ì U+00CC
	"i",  // Í U+00CD
	"i",  // Î U+00CE
	"i",  // Ï U+00CF
	"d",  // Ð U+00D0
	"n",  // Ñ U+00D1
	"o",  // Ò U+00D2
	"o",  // Ó U+00D3
	"o",  // Ô U+00D4
	"o",  // Õ U+00D5
	"o",  // Ö U+00D6
	"×",  // U+00D7
	"o",  // Ø U+00D8
	"u",  // Ù U+00D9
	"u",  // Ú U+00DA
	"u",  // Û U+00DB
	"u",  // Ü U+00DC
	"y",  // Ý U+00DD
	"th", // Þ U+00DE
	"ss", // ß U+00DF
	"a",  // à U+00E0
	"a",  // á U+00E1
	"a",  // â U+00E2
	"a",  // ã U+00E3
	"a",  // ä U+00E4
	"a",  // å U+00E5
	"ae", // æ U+00E6
	"c",  // ç U+00E7
	"e",  // è U+00E8
	"e",  // é U+00E9
	"e",  // ê U+00EA
	"e",  // ë U+00EB
	"i",  // ì U+00EC
	"i",  // í U+00ED
	"i",  // î U+00EE
	"i",  // ï U+00EF
	"d",  // ð U+00F0
	"n",  // ñ U+00F1
	"o",  // ò U+00F2
	"o",  // ó U+00F3
	"o",  // ô U+00F4
	"o",  // õ U+00F5
	"o",  // ö U+00F6
	"÷",  // U+00F7
	"o",  // ø U+00F8
	"u",  // ù U+00F9
	"u",  // ú U+00FA
	"u",  // û U+00FB
	"u",  // ü U+00FC
	"y",  // ý U+00FD
	"th", // þ U+00FE
	"y",  // ÿ U+00FF
	"a",  // Ā U+0100
	"a",  // ā U+0101
	"a",  // Ă U+0102
	"a",  // ă U+0103
	"a",  // Ą U+0104
	"a",  // ą U+0105
	"c",  // Ć U+0106
	"c",  // ć U+0107
	"c",  // Ĉ U+0108
	"c",  // ĉ U+0109
	"c",  // Ċ U+010A
	"c",  // ċ U+010B
	"c",  // Č U+010C
	"c",  // č U+010D
	"d",  // Ď U+010E
	"d",  // ď U+010F
	"d",  // Đ U+0110
	"d",  // đ U+0111
	"e",  // Ē U+0112
	"e",  // ē U+0113
	"e",  // Ĕ U+0114
	"e",  // ĕ U+0115
	"e",  // Ė U+0116
	"e",  // ė U+0117
	"e",  // Ę U+0118
	"e",  // ę U+0119
	"e",  // Ě U+011A
	"e",  // ě U+011B
	"g",  // Ĝ U+011C
	"g",  // ĝ U+011D
	"g",  // Ğ U+011E
	"g",  // ğ U+011F
	"g",  // Ġ U+0120
	"g",  // ġ U+0121
	"g",  // Ģ U+0122
	"g",  // ģ U+0123
	"h",  // Ĥ U+0124
	"h",  // ĥ U+0125
	"h",  // Ħ U+0126
	"h",  // ħ U+0127
	"i",  // Ĩ U+0128
	"i",  // ĩ U+0129
	"i",  // Ī U+012A
	"i",  // ī U+012B
	"i",  // Ĭ U+012C
	"i",  // ĭ U+012D
	"i",  // Į U+012E
	"i",  // į U+012F
	"i",  // İ U+0130
	"i",  // ı U+0131
	"ij", // Ĳ U+0132
	"ij", // ĳ U+0133
	"j",  // Ĵ U+0134
	"j",  // ĵ U+0135
	"k",  // Ķ U+0136
	"k",  // ķ U+0137
	"q",  // ĸ U+0138
	"l",  // Ĺ U+0139
	"l",  // ĺ U+013A
	"l",  // Ļ U+013B
	"l",  // ļ U+013C
	"l",  // Ľ U+013D
	"l",  // ľ U+013E
	"l",  // Ŀ U+013F
	"l",  // ŀ U+0140
	"l",  // Ł U+0141
	"l",  // ł U+0142
	"n",  // Ń U+0143
	"n",  // ń U+0144
	"n",  // Ņ U+0145
	"n",  // ņ U+0146
	"n",  // Ň U+0147
	"n",  // ň U+0148
	"n",  // ŉ U+0149
	"n",  // Ŋ U+014A
	"n",  // ŋ U+014B
	"o",  // Ō U+014C
	"o",  // ō U+014D
	"o",  // Ŏ U+014E
	"o",  // ŏ U+014F
	"o",  // Ő U+0150
	"o",  // ő U+0151
	"oe", // Œ U+0152
	"oe", // œ U+0153
	"r",  // Ŕ U+0154
	"r",  // ŕ U+0155
	"r",  // Ŗ U+0156
	"r",  // ŗ U+0157
	"r",  // Ř U+0158
	"r",  // ř U+0159
	"s",  // Ś U+015A
	"s",  // ś U+015B
	"s",  // Ŝ U+015C
	"s",  // ŝ U+015D
	"s",  // Ş U+015E
	"s",  // ş U+015F
	"s",  // Š U+0160
	"s",  // š U+0161
	"t",  // Ţ U+0162
	"t",  // ţ U+0163
	"t",  // Ť U+0164
	"t",  // ť U+0165
	"t",  // Ŧ U+0166
	"t",  // ŧ U+0167
	"u",  // Ũ U+0168
	"u",  // ũ U+0169
	"u",  // Ū U+016A
	"u",  // ū U+016B
	"u",  // Ŭ U+016C
	"u",  // ŭ U+016D
	"u",  // Ů U+016E
	"u",  // ů U+016F
	"u",  // Ű U+0170
	"u",  // ű U+0171
	"u",  // Ų U+0172
	"u",  // ų U+0173
	"w",  // Ŵ U+0174
	"w",  // ŵ U+0175
	"y",  // Ŷ U+0176
	"y",  // ŷ U+0177
	"y",  // Ÿ U+0178
	"z",  // Ź U+0179
	"z",  // ź U+017A
	"z",  // Ż U+017B
	"z",  // ż U+017C
	"z",  // Ž U+017D
	"z",  // ž U+017E
	"s",  // ſ U+017F
}
