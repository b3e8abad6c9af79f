package token

import (
	"testing"
)

func TestHashEqual(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"", "", true},
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"abc", "ab", false},
		{"", "a", false},
		{HashToken("x"), HashToken("x"), true},
		{HashToken("x"), HashToken("y"), false},
	} {
		if got := HashEqual(tc.a, tc.b); got != tc.want {
			t.Errorf("HashEqual(%q, %q) = %t, want %t", tc.a, tc.b, got, tc.want)
		}
	}
}
