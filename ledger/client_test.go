package ledger

import (
	"strings"
	"testing"
)

func TestClientAuthenticate(t *testing.T) {
	const secret = "tlcs_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	long := strings.Repeat("s", 200) // longer than the stack buffer
	offByOne := SecretSHA256(secret)[:63] + "0"
	if offByOne == SecretSHA256(secret) {
		offByOne = offByOne[:63] + "1"
	}
	for _, tc := range []struct {
		name   string
		stored string
		secret string
		want   bool
	}{
		{"right secret", SecretSHA256(secret), secret, true},
		{"stored in upper case", strings.ToUpper(SecretSHA256(secret)), secret, true},
		{"long secret", SecretSHA256(long), long, true},
		{"empty secret", SecretSHA256(""), "", true},
		{"wrong secret", SecretSHA256(secret), secret + "x", false},
		{"empty against a secret", SecretSHA256(secret), "", false},
		{"last digit off", offByOne, secret, false},
		{"stored hash too short", SecretSHA256(secret)[:62], secret, false},
		{"no stored hash", "", secret, false},
	} {
		if got := (Client{ID: "web", SecretSHA256: tc.stored}).Authenticate(tc.secret); got != tc.want {
			t.Errorf("%s: Authenticate = %t, want %t", tc.name, got, tc.want)
		}
	}
}

func BenchmarkClientAuthenticate(b *testing.B) {
	const secret = "tlcs_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	c := Client{ID: "web", SecretSHA256: SecretSHA256(secret)}
	b.ReportAllocs()
	for b.Loop() {
		if !c.Authenticate(secret) {
			b.Fatal("refused")
		}
	}
}
