// Drives Tollgate's Admin API with go-kong, Kong's Go client (the one decK uses): create,
// list with paging, update, delete and errors, on services, routes, consumers, key-auth
// credentials and plugins. Usage: gokong <admin url>. Prints one line per check and
// "N passed, N failed"; exits 1 when a check failed.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/kong/go-kong/kong"
)

var passed, failed int

func check(name string, ok bool, detail ...any) {
	if ok {
		passed++
		fmt.Println("ok  ", name)
		return
	}
	failed++
	fmt.Println("FAIL", name, fmt.Sprint(detail...))
}

// must stops the run at an error the rest cannot go on without.
func must[T any](v T, err error) T {
	if err != nil {
		fmt.Println("FAIL", err)
		fmt.Printf("%d passed, %d failed\n", passed, failed+1)
		os.Exit(1)
	}
	return v
}

func apiCode(err error) int {
	var e *kong.APIError
	if errors.As(err, &e) {
		return e.Code()
	}
	return 0
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gokong <admin url>")
		os.Exit(2)
	}
	ctx := context.Background()
	c := must(kong.NewClient(kong.String(os.Args[1]), nil))

	root := must(c.Root(ctx))
	v, _ := root["version"].(string)
	check("root version is 3.x", strings.HasPrefix(v, "3."), v)
	info := must(c.Info.Get(ctx))
	check("info decodes the configuration", info.Version != "", info)
	st := must(c.Status(ctx))
	check("status says the database is reachable", st.Database.Reachable)

	// Create: five services, one with a url.
	var ids []string
	for i := 0; i < 5; i++ {
		s := must(c.Services.Create(ctx, &kong.Service{
			Name: kong.String(fmt.Sprintf("gk-%d", i)),
			Host: kong.String("upstream.example"),
			Tags: kong.StringSlice("gokong"),
		}))
		ids = append(ids, *s.ID)
	}
	u := must(c.Services.Create(ctx, &kong.Service{
		Name: kong.String("gk-url"),
		URL:  kong.String("https://api.example:8443/v1"),
	}))
	check("url shorthand", *u.Protocol == "https" && *u.Host == "api.example" &&
		*u.Port == 8443 && *u.Path == "/v1", *u.Protocol, *u.Host, *u.Port, *u.Path)

	// List with paging: pages of two, followed through offset.
	var names []string
	opt := &kong.ListOpt{Size: 2, Tags: kong.StringSlice("gokong")}
	pages := 0
	for opt != nil {
		page, next, err := c.Services.List(ctx, opt)
		must(page, err)
		pages++
		check("page holds at most 2", len(page) <= 2, len(page))
		for _, s := range page {
			names = append(names, *s.Name)
		}
		opt = next
	}
	sort.Strings(names)
	check("paging saw every tagged service once", strings.Join(names, ",") == "gk-0,gk-1,gk-2,gk-3,gk-4", names)
	check("three pages", pages == 3, pages)
	all := must(c.Services.ListAll(ctx))
	check("list all", len(all) == 6, len(all))

	// Update and get by name.
	s0 := must(c.Services.Get(ctx, kong.String("gk-0")))
	s0.Retries = kong.Int(2)
	s0.Path = kong.String("/changed")
	up := must(c.Services.Update(ctx, s0))
	check("update applied", *up.Retries == 2 && *up.Path == "/changed")
	again := must(c.Services.Get(ctx, s0.ID))
	check("update persisted", *again.Retries == 2)

	// Routes, consumers, credentials, plugins.
	r := must(c.Routes.CreateInService(ctx, s0.ID, &kong.Route{
		Name:  kong.String("gk-route"),
		Paths: kong.StringSlice("/gk"),
	}))
	check("route belongs to its service", *r.Service.ID == *s0.ID)
	check("unset route arrays stay unset", r.Hosts == nil && r.Methods == nil)
	rs, _ := must2(c.Routes.ListForService(ctx, s0.ID, nil))
	check("routes for service", len(rs) == 1)
	cons := must(c.Consumers.Create(ctx, &kong.Consumer{Username: kong.String("gk-user")}))
	ka := must(c.KeyAuths.Create(ctx, cons.Username, &kong.KeyAuth{Key: kong.String("gk-secret")}))
	check("key-auth key", *ka.Key == "gk-secret" && *ka.Consumer.ID == *cons.ID)
	p := must(c.Plugins.Create(ctx, &kong.Plugin{
		Name:    kong.String("key-auth"),
		Service: &kong.Service{ID: s0.ID},
		Config:  kong.Configuration{"key_names": []string{"apikey"}},
	}))
	check("plugin defaults filled", p.Config["hide_credentials"] == false && *p.Enabled)
	valid, msg, err := c.Plugins.Validate(ctx, &kong.Plugin{
		Name: kong.String("key-auth"), Config: kong.Configuration{"nope": 1},
	})
	check("plugin validate rejects an unknown field", err == nil && !valid && strings.Contains(msg, "nope"), msg, err)

	// Errors.
	_, err = c.Services.Get(ctx, kong.String("gk-missing"))
	check("404 is a not-found error", kong.IsNotFoundErr(err), err)
	_, err = c.Services.Create(ctx, &kong.Service{Name: kong.String("gk-0"), Host: kong.String("x")})
	check("duplicate name is 409", apiCode(err) == 409, err)
	_, err = c.Services.Create(ctx, &kong.Service{Name: kong.String("gk-bad"), Host: kong.String("x"), Port: kong.Int(70000)})
	check("bad field is 400 with Kong's message", apiCode(err) == 400 && strings.Contains(err.Error(), "port"), err)
	err = c.Services.Delete(ctx, s0.ID)
	check("deleting a service with routes is refused", apiCode(err) == 400, err)

	// Delete.
	noErr(c.Plugins.Delete(ctx, p.ID))
	noErr(c.KeyAuths.Delete(ctx, cons.ID, ka.ID))
	noErr(c.Consumers.Delete(ctx, cons.ID))
	noErr(c.Routes.Delete(ctx, r.ID))
	for _, id := range append(ids, *u.ID) {
		noErr(c.Services.Delete(ctx, kong.String(id)))
	}
	left := must(c.Services.ListAll(ctx))
	check("nothing left", len(left) == 0, len(left))
	_, err = c.Consumers.Get(ctx, kong.String("gk-user"))
	check("deleted consumer is gone", kong.IsNotFoundErr(err), err)

	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}

func noErr(err error) {
	must(0, err)
}

func must2[T any, U any](a T, b U, err error) (T, U) {
	if err != nil {
		fmt.Println("FAIL", err)
		os.Exit(1)
	}
	return a, b
}
