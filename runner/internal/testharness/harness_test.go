package testharness

import "testing"

func TestNextSubidStart(t *testing.T) {
	cases := []struct {
		name, data string
		start      int
		has        bool
	}{
		{"empty", "", 100000, false},
		{"after existing", "dev:100000:65536\n", 165536, false},
		{"max of several", "a:300000:65536\nb:100000:65536\n", 365536, false},
		{"already present", "dev:100000:65536\nterok-e2e:165536:65536\n", 0, true},
		{"garbage ignored", "junk\nx:y:z\n", 100000, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start, has := nextSubidStart([]byte(c.data), RootlessUser)
			if start != c.start || has != c.has {
				t.Fatalf("got (%d, %v), want (%d, %v)", start, has, c.start, c.has)
			}
		})
	}
}

func TestRecipeHashChangesWithRecipe(t *testing.T) {
	a, b := RecipeHash([]byte("echo a")), RecipeHash([]byte("echo b"))
	if a == b || len(a) != 16 || a != RecipeHash([]byte("echo a")) {
		t.Fatalf("hashes %q %q", a, b)
	}
}
