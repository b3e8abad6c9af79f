package token

import (
	"reflect"
	"testing"
)

// Equal compares every field of AccessClaims.
func TestAccessClaimsEqualCoversEveryField(t *testing.T) {
	base := AccessClaims{Issuer: "i", Subject: "s", Audience: []string{"a"}, ExpiresAt: 1, IssuedAt: 2,
		NotBefore: 3, JTI: "j", ClientID: "c", Scope: "sc", SID: "sid", Version: 1, Custom: []byte(`{"t":1}`)}
	if !base.Equal(base) {
		t.Fatal("claims differ from themselves")
	}
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		c := base
		c.Audience = []string{"a"}
		c.Custom = []byte(`{"t":1}`)
		f := reflect.ValueOf(&c).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Int, reflect.Int64:
			f.SetInt(f.Int() + 1)
		case reflect.Slice:
			if f.Type().Elem().Kind() == reflect.String {
				f.Set(reflect.ValueOf([]string{"a", "b"}))
			} else {
				f.SetBytes([]byte(`{"t":2}`))
			}
		default:
			t.Fatalf("field %s of kind %s: teach this test to change it", typ.Field(i).Name, f.Kind())
		}
		if base.Equal(c) {
			t.Errorf("Equal ignores %s", typ.Field(i).Name)
		}
	}
}
