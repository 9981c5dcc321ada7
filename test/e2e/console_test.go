package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/input"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
	"github.com/keyward/keyward/internal/testenv"
)

var updateConsolePNG = flag.Bool("update-console-png", false,
	"TestConsole: also write its key-list screenshot to docs/console.png")

var secretPattern = regexp.MustCompile(`^kw_test_[0-9A-Za-z]{49}$`)

// TestConsole drives the web console in a real headless Chromium against a
// real `keyward serve`, the way an administrator does: sign in (and a wrong
// key is refused), generate a key and read its secret, search by name and by
// the pasted secret, switch it off, edit it, regenerate it and delete it,
// checking each effect over gRPC with Validate. Key policies too: a rate
// limit, IP allow-list and quota set in the edit dialog (sent with an
// update_mask naming only them, read back with GetKey), an invalid CIDR
// refused by Keyward and shown next to its field with nothing changed, a
// regeneration with a 1-hour grace period (the card shows the previous key,
// and both secrets validate), and a quota set when generating. Along the
// way: the empty state, error messages for failed calls, copy, keyboard use,
// paging through more keys than one page, a phone-sized screen, and
// sign-out. It fails on any uncaught exception or Content-Security-Policy
// violation in the page, and on any request whose URL carries a secret.
//
// Screenshots of the main states go to $KEYWARD_ARTIFACTS/console (or a
// temporary directory, logged); -update-console-png also writes the key
// list to docs/console.png for the README.
func TestConsole(t *testing.T) {
	chromium := chromiumPath(t)
	s := startServer(t, t.TempDir(), "")
	kc := keyClient(t, s)
	admin := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.AdminKey)
	}
	validateFrom := func(secret, clientIP string) *keywardv1.ValidateResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := kc.Validate(ctx, &keywardv1.ValidateRequest{Key: secret, ClientIp: clientIP})
		if err != nil {
			t.Fatalf("Validate over gRPC: %v", err)
		}
		return resp
	}
	validate := func(secret string) *keywardv1.ValidateResponse {
		t.Helper()
		return validateFrom(secret, "")
	}
	getKey := func(id string) (*keywardv1.Key, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := kc.GetKey(admin(ctx), &keywardv1.GetKeyRequest{KeyId: id})
		return resp.GetKey(), err
	}
	createKey := func(k *keywardv1.Key) (*keywardv1.Key, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := kc.CreateKey(admin(ctx), &keywardv1.CreateKeyRequest{Key: k})
		if err != nil {
			t.Fatalf("CreateKey %q over gRPC: %v", k.GetDisplayName(), err)
		}
		return resp.GetKey(), resp.GetSecret()
	}
	adminKeyID := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := kc.ListKeys(admin(ctx), &keywardv1.ListKeysRequest{Query: s.AdminKey})
		if err != nil || len(resp.GetKeys()) != 1 {
			t.Fatalf("find the admin key: %v, %d keys", err, len(resp.GetKeys()))
		}
		return resp.GetKeys()[0].GetKeyId()
	}()

	b := newBrowser(t, chromium, s.BaseURL)
	secrets := []string{s.AdminKey} // none of these may ever appear in a URL

	var (
		keyID, secret string
		card          string // CSS selector of the generated key's card
	)

	step(t, "sign-in", func(t *testing.T) {
		b.t = t
		b.navigate(s.BaseURL + "/")
		b.waitJS("the sign-in form", `!document.getElementById('signin-view').hidden`)
		b.waitJS("focus on the admin key field", `document.activeElement.id === 'signin-key'`)
		b.shot("sign-in")

		// A wrong key (well-formed, but unknown) is refused, and said so.
		wrong := "kw_live_" + strings.Repeat("A", 49)
		b.do("type a wrong key", chromedp.SendKeys(chromedp.CSS("#signin-key"), wrong))
		b.click("#signin-submit")
		b.waitJS("the wrong key's error", `(() => { const e = document.getElementById('signin-error');
			return !e.hidden && e.textContent.includes('did not accept'); })()`)
		if got := evalJS[string](b, `sessionStorage.getItem('keyward.adminKey') ?? ''`); got != "" {
			t.Errorf("sessionStorage holds %q after a refused sign-in", got)
		}
		b.shot("sign-in-refused")

		b.replaceText("#signin-key", s.AdminKey+"\n") // Enter submits
		b.waitJS("the key list", `!document.getElementById('keys-view').hidden`)
		b.waitCards("the admin key's card", fmt.Sprintf(`ids.includes(%q)`, adminKeyID))
		if got := evalJS[string](b, `sessionStorage.getItem('keyward.adminKey') ?? ''`); got != s.AdminKey {
			t.Errorf("sessionStorage holds %q, want the admin key", got)
		}
		if got := evalJS[string](b, `localStorage.length + document.cookie.length + ''`); got != "0" {
			t.Errorf("the admin key went beyond sessionStorage: localStorage/cookies hold %s entries/bytes", got)
		}
		text := b.text(cardSel(adminKeyID))
		for _, want := range []string{"admin (generated)", "you", "admin", "keyward:admin", "Active"} {
			if !strings.Contains(text, want) {
				t.Errorf("the admin key's card does not say %q: %q", want, text)
			}
		}
		// Every action on a card is a real button, reachable by keyboard.
		if n := evalJS[int](b, `[...document.querySelectorAll('li.card [data-action]')].filter(e => e.tagName !== 'BUTTON').length`); n != 0 {
			t.Errorf("%d card actions are not buttons", n)
		}
	})

	step(t, "reload-keeps-session-and-lists-keys", func(t *testing.T) {
		b.t = t
		seedKeys(t, createKey, kc, admin)
		b.navigate(s.BaseURL + "/")
		b.waitCards("the seeded keys after a reload", `ids.length === 6`)
		b.waitJS("the list status", `document.getElementById('list-status').textContent.includes('Showing all 6 keys')`)
		b.do("blur the search box", chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
		png := b.shot("key-list")
		if *updateConsolePNG {
			dst := filepath.Join(repoRoot, "docs", "console.png")
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s", dst)
		}
	})

	step(t, "empty-state", func(t *testing.T) {
		b.t = t
		b.do("type a search", chromedp.SendKeys(chromedp.CSS("#search"), "no-such-key-anywhere"))
		b.waitJS("the empty state", `(() => { const e = document.getElementById('empty');
			return !e.hidden && e.textContent.includes('No keys match “no-such-key-anywhere”'); })()`)
		if ids := b.cardIDs(); len(ids) != 0 {
			t.Errorf("cards shown beside the empty state: %v", ids)
		}
		b.shot("empty-search")
		b.replaceText("#search", "")
		b.waitCards("every key again", `ids.length === 6`)
	})

	step(t, "generate", func(t *testing.T) {
		b.t = t
		b.click("#generate")
		b.waitJS("the generate dialog, focus on the name", `document.getElementById('key-dialog').open && document.activeElement.id === 'f-name'`)
		b.do("fill the form",
			chromedp.SendKeys(chromedp.CSS("#f-name"), "MES line 1"),
			chromedp.SendKeys(chromedp.CSS("#f-description"), "Plant A, hall 3"),
			chromedp.SendKeys(chromedp.CSS("#f-scopes"), "orders:read, orders:write"),
		)
		b.selectOption("#f-environment", "test")
		if evalJS[bool](b, `document.getElementById('f-policies').open`) {
			t.Error("the generate dialog opens with its Policies expanded; they should start collapsed")
		}
		b.click("#f-policies > summary")
		b.click(`#f-expiry-quick [data-days="90"]`)
		b.waitJS("the expiry note", `document.getElementById('f-expire-note').textContent.includes('Expires in 3 months')
			&& document.getElementById('f-policies-summary').textContent.includes('expires in 3 months')`)
		b.click("#f-metadata-add")
		b.do("fill a label",
			chromedp.SendKeys(chromedp.CSS("#f-metadata .meta-row:last-child .meta-key"), "plant"),
			chromedp.SendKeys(chromedp.CSS("#f-metadata .meta-row:last-child .meta-value"), "A"),
		)
		b.shot("generate-dialog")
		b.click("#key-form-submit")
		b.waitJS("the secret dialog", `document.getElementById('secret-dialog').open && document.getElementById('secret-value').value !== ''`)
		secret = evalJS[string](b, `document.getElementById('secret-value').value`)
		if !secretPattern.MatchString(secret) {
			t.Fatalf("the dialog shows %q, want a kw_test_ key", secret)
		}
		secrets = append(secrets, secret)
		warning := b.text("#secret-warning")
		if !strings.Contains(warning, "only time") || !strings.Contains(warning, "cannot show it again") {
			t.Errorf("the secret dialog's warning does not say it is shown once: %q", warning)
		}
		if id := evalJS[string](b, `document.activeElement.id`); id != "secret-copy" {
			t.Errorf("focus is on #%s in the secret dialog, want the Copy button", id)
		}
		b.shot("secret-shown")
		b.click("#secret-copy")
		b.waitJS("the copy confirmation", `document.getElementById('secret-copied').textContent.includes('Copied')`)
		if got := b.clipboard(); got != secret {
			t.Errorf("the clipboard holds %q after Copy, want the secret", got)
		}
		b.click("#secret-done")
		b.waitJS("the secret dialog to close, focus back on Generate", `!document.getElementById('secret-dialog').open && document.activeElement.id === 'generate'`)
		b.waitJS("the closed secret dialog to forget the secret", `document.getElementById('secret-value').value === ''`)

		if v := validate(secret); !v.GetValid() {
			t.Fatalf("Validate(new secret) = %v, want valid", v)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		found, err := kc.ListKeys(admin(ctx), &keywardv1.ListKeysRequest{Query: secret})
		if err != nil || len(found.GetKeys()) != 1 {
			t.Fatalf("ListKeys(query=secret): %v, %v", found, err)
		}
		k := found.GetKeys()[0]
		keyID, card = k.GetKeyId(), cardSel(k.GetKeyId())
		if k.GetDisplayName() != "MES line 1" || k.GetDescription() != "Plant A, hall 3" || k.GetEnvironment() != "test" ||
			strings.Join(k.GetScopes(), ",") != "orders:read,orders:write" || k.GetMetadata()["plant"] != "A" || len(k.GetMetadata()) != 1 {
			t.Errorf("the generated key is %v", k)
		}
		if exp := k.GetExpireTime().AsTime(); exp.Before(time.Now().Add(89*24*time.Hour)) || exp.After(time.Now().Add(91*24*time.Hour)) {
			t.Errorf("expireTime = %v, want about 90 days from now", exp)
		}
		text := b.text(card)
		for _, want := range []string{"MES line 1", "Plant A, hall 3", k.GetMaskedKey(), "test", "orders:read", "orders:write",
			"Active", "Created", "Last used", "Never", "Expires", "secret available to copy", keyID} {
			if !strings.Contains(text, want) {
				t.Errorf("the new card does not show %q: %q", want, text)
			}
		}
		if got := b.attr(card+" .switch", "aria-checked"); got != "true" {
			t.Errorf("the new card's switch is aria-checked=%q, want true", got)
		}
	})
	if keyID == "" {
		return
	}

	step(t, "copy", func(t *testing.T) {
		b.t = t
		b.click(card + ` [data-action="copy"]`)
		b.waitJS("the copy message", `document.getElementById('toast').textContent.includes('Copied the key of “MES line 1”')`)
		if got := b.clipboard(); got != secret {
			t.Errorf("Copy on a card whose secret the page has: clipboard %q, want the secret", got)
		}
		if got := b.attr(card+` [data-action="copy"]`, "aria-disabled"); got != "" {
			t.Errorf("Copy on a card whose secret the page has is aria-disabled=%q", got)
		}
		// The admin key's secret is neither in the page nor recoverable: Copy
		// stays focusable but says it cannot act, in its tooltip, its
		// description and when pressed, and copies nothing.
		adminCopy := cardSel(adminKeyID) + ` [data-action="copy"]`
		if got := b.attr(adminCopy, "aria-disabled"); got != "true" {
			t.Errorf("Copy on a card without a secret to copy: aria-disabled=%q, want true", got)
		}
		if got := b.attr(adminCopy, "title"); !strings.Contains(got, "Secret not recoverable") || !strings.Contains(got, "master key") {
			t.Errorf("the unavailable Copy's tooltip is %q", got)
		}
		if got := evalJS[string](b, fmt.Sprintf(`document.querySelector(%q).getAttribute('aria-describedby').split(' ')
			.map(id => document.getElementById(id).textContent).join(' | ')`, adminCopy)); !strings.Contains(got, "Secret not recoverable") {
			t.Errorf("the unavailable Copy's accessible description is %q, want the reason", got)
		}
		b.click(adminCopy)
		b.waitJS("the reason Copy cannot copy", `(() => { const t = document.getElementById('toast').textContent;
			return t.includes('cannot be copied') && t.includes('recoverable') && t.includes('Regenerate'); })()`)
		if got := b.clipboard(); got != secret {
			t.Errorf("an unavailable Copy changed the clipboard to %q", got)
		}
	})

	step(t, "details", func(t *testing.T) {
		b.t = t
		link := card + " .card-name a"
		if got := b.attr(link, "href"); got != "#/keys/"+keyID {
			t.Errorf("the card's name links to %q, want #/keys/%s", got, keyID)
		}
		b.click(link)
		b.waitJS("the key's page", fmt.Sprintf(`!document.getElementById('detail-view').hidden && document.getElementById('keys-view').hidden
			&& document.getElementById('detail-title').textContent === 'MES line 1' && document.getElementById('detail-key-id').textContent === %q
			&& document.activeElement.id === 'detail-title'
			&& document.getElementById('usage-summary').textContent.endsWith('in the last 24 h')`, keyID))
		// Not recoverable, but generated in this page: Copy still has it.
		if got := b.attr("#detail-copy", "aria-disabled"); got != "" {
			t.Errorf("Copy on the page of a key generated in this page is aria-disabled=%q", got)
		}
		if text := b.text("#detail-secret"); !strings.Contains(text, "Not recoverable") {
			t.Errorf("the key's page describes its secret as %q", text)
		}
		b.waitJS("its activity", `document.querySelector('#detail-audit .event')?.dataset.action === 'key.create'`)
		b.shot("key-page")
		// Back returns to the list, focus on the card it was opened from.
		b.do("go back", chromedp.NavigateBack())
		b.waitJS("the list, focus on the card's name", fmt.Sprintf(`!document.getElementById('keys-view').hidden
			&& document.getElementById('detail-view').hidden && document.activeElement === document.querySelector(%q)`, link))
	})

	step(t, "search", func(t *testing.T) {
		b.t = t
		b.replaceText("#search", "mes line")
		b.waitCards("search by name", fmt.Sprintf(`ids.join() === %q`, keyID))
		b.waitJS("the match count", `document.getElementById('list-status').textContent.includes('1 matching key')`)
		b.shot("search-by-name")

		// Paste the whole secret: one input event with all of it, as a paste makes.
		b.do("select the search box", chromedp.Evaluate[chromedp.Void](`document.getElementById('search').select()`))
		b.do("paste the secret", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Call(ctx, input.InsertText, input.InsertTextParams{Text: secret})
			return err
		}))
		b.waitCards("search by the pasted secret", fmt.Sprintf(`ids.join() === %q`, keyID))
		b.shot("search-by-secret")

		// A secret of another key finds nothing (and says so without echoing it).
		other := "kw_test_" + strings.Repeat("B", 49)
		b.replaceText("#search", other)
		b.waitJS("the empty state for a pasted key", `(() => { const e = document.getElementById('empty');
			return !e.hidden && e.textContent.includes('No key matches the pasted key'); })()`)

		b.replaceText("#search", "")
		b.waitCards("every key again", fmt.Sprintf(`ids.includes(%q) && ids.includes(%q)`, keyID, adminKeyID))
	})

	step(t, "switch-off-and-on", func(t *testing.T) {
		b.t = t
		b.click(card + " .switch")
		b.waitJS("the switch-off warning", `(() => { const d = document.getElementById('confirm-dialog');
			return d.open && d.textContent.includes('blocks access immediately') && document.activeElement.id === 'confirm-cancel'; })()`)
		b.shot("switch-off-warning")
		b.click("#confirm-ok")
		b.waitJS("the card to show the key off", fmt.Sprintf(`(() => { const c = document.querySelector(%q);
			return c.querySelector('.switch').getAttribute('aria-checked') === 'false' && c.textContent.includes('Inactive')
				&& !document.getElementById('confirm-dialog').open; })()`, card))
		if v := validate(secret); v.GetValid() || v.GetReason() != keywardv1.ValidateResponse_REASON_DISABLED {
			t.Errorf("Validate after switching off in the console = %v, want REASON_DISABLED", v)
		}
		b.shot("switched-off")

		// On again, from the keyboard: no confirmation needed.
		b.do("focus the switch", chromedp.Focus(chromedp.CSS(card+" .switch")))
		b.do("press Space", chromedp.KeyEvent(" "))
		b.waitJS("the card to show the key on", fmt.Sprintf(`document.querySelector(%q).getAttribute('aria-checked') === 'true'`, card+" .switch"))
		if v := validate(secret); !v.GetValid() {
			t.Errorf("Validate after switching on in the console = %v, want valid", v)
		}
	})

	step(t, "edit", func(t *testing.T) {
		b.t = t
		b.click(card + ` [data-action="edit"]`)
		b.waitJS("the edit dialog", `document.getElementById('key-dialog').open && document.getElementById('f-name').value === 'MES line 1'`)
		if !evalJS[bool](b, `document.getElementById('f-environment').disabled`) {
			t.Error("the environment can be edited; it is part of the secret")
		}
		b.replaceText("#f-name", "MES line 1 (plant A)")
		b.replaceText("#f-description", "Hall 3, packaging")
		b.do("add a scope", chromedp.SendKeys(chromedp.CSS("#f-scopes"), ", inventory:read"))
		if !evalJS[bool](b, `document.getElementById('f-policies').open && document.getElementById('f-expire-at').value !== ''`) {
			t.Error("the edit dialog does not show the key's policies, expiry filled in")
		}
		b.click(`#f-expiry-quick [data-days="never"]`)
		b.waitJS("the never-expires note", `document.getElementById('f-expire-at').value === ''
			&& document.getElementById('f-expire-note').textContent.includes('Never expires')`)
		b.click("#f-metadata-add")
		b.do("fill a label",
			chromedp.SendKeys(chromedp.CSS("#f-metadata .meta-row:last-child .meta-key"), "line"),
			chromedp.SendKeys(chromedp.CSS("#f-metadata .meta-row:last-child .meta-value"), "1"),
		)
		b.shot("edit-dialog")
		b.click("#key-form-submit")
		b.waitJS("the card to update", fmt.Sprintf(`!document.getElementById('key-dialog').open
			&& document.querySelector(%q).textContent.includes('MES line 1 (plant A)')`, card))
		text := b.text(card)
		for _, want := range []string{"Hall 3, packaging", "inventory:read"} {
			if !strings.Contains(text, want) {
				t.Errorf("the edited card does not show %q: %q", want, text)
			}
		}
		k, err := getKey(keyID)
		if err != nil {
			t.Fatal(err)
		}
		if k.GetDisplayName() != "MES line 1 (plant A)" || k.GetDescription() != "Hall 3, packaging" ||
			strings.Join(k.GetScopes(), ",") != "orders:read,orders:write,inventory:read" ||
			k.GetMetadata()["plant"] != "A" || k.GetMetadata()["line"] != "1" || k.GetExpireTime() != nil {
			t.Errorf("after the edit the key is %v", k)
		}
		if got := b.lastUpdateMask(keyID); got != "display_name,description,scopes,metadata,expire_time" {
			t.Errorf("the edit sent update_mask=%q, want exactly the fields changed", got)
		}
	})

	// A second key for the policies, so the walk-through key stays usable
	// from anywhere.
	var policyKey *keywardv1.Key
	var policySecret string
	step(t, "edit-policies", func(t *testing.T) {
		b.t = t
		policyKey, policySecret = createKey(&keywardv1.Key{DisplayName: "Partner gateway", Scopes: []string{"orders:read"}})
		secrets = append(secrets, policySecret)
		pcard := cardSel(policyKey.GetKeyId())
		b.replaceText("#search", "Partner gateway")
		b.waitCards("the partner key", fmt.Sprintf(`ids.join() === %q`, policyKey.GetKeyId()))
		b.click(pcard + ` [data-action="edit"]`)
		b.waitJS("the edit dialog, policies shown", `document.getElementById('key-dialog').open
			&& document.getElementById('f-policies').open && document.getElementById('f-name').value === 'Partner gateway'`)
		b.do("fill the policies",
			chromedp.SendKeys(chromedp.CSS("#f-cidrs"), "10.0.0.0/8\n192.168.1.0/24"),
			chromedp.SendKeys(chromedp.CSS("#f-rate-limit"), "100"),
			chromedp.SendKeys(chromedp.CSS("#f-rate-burst"), "200"),
			chromedp.SendKeys(chromedp.CSS("#f-quota-limit"), "1000"),
		)
		b.selectOption("#f-rate-period", "1")
		b.selectOption("#f-quota-refill", "REFILL_DAILY")
		thousand := evalJS[string](b, `(1000).toLocaleString()`)
		b.waitJS("the policies summary", fmt.Sprintf(`(() => { const s = document.getElementById('f-policies-summary').textContent;
			return s.includes('IP: 2 ranges') && s.includes('100/s · burst 200') && s.includes(%q); })()`, "quota "+thousand+" daily"))
		b.do("show the policies", chromedp.ScrollIntoView(chromedp.CSS("#f-quota-limit")))
		b.shot("edit-policies")
		b.click("#key-form-submit")
		b.waitJS("the card to show the policies", fmt.Sprintf(`!document.getElementById('key-dialog').open
			&& !document.querySelector(%q).hidden`, pcard+" .card-policies"))
		text := b.text(pcard)
		for _, want := range []string{"100/s · burst 200", "quota " + thousand + "/" + thousand + " daily", "IP: 2 ranges"} {
			if !strings.Contains(text, want) {
				t.Errorf("the card does not show %q: %q", want, text)
			}
		}
		if got := b.lastUpdateMask(policyKey.GetKeyId()); got != "allowed_cidrs,rate_limit,quota" {
			t.Errorf("the policy edit sent update_mask=%q, want allowed_cidrs,rate_limit,quota", got)
		}
		k, err := getKey(policyKey.GetKeyId())
		if err != nil {
			t.Fatal(err)
		}
		wantRate := &keywardv1.RateLimit{Limit: 100, Period: durationpb.New(time.Second), Burst: 200}
		if strings.Join(k.GetAllowedCidrs(), ",") != "10.0.0.0/8,192.168.1.0/24" || !proto.Equal(k.GetRateLimit(), wantRate) ||
			k.GetQuota().GetLimit() != 1000 || k.GetQuota().GetRefill() != keywardv1.Quota_REFILL_DAILY ||
			k.GetDisplayName() != "Partner gateway" || strings.Join(k.GetScopes(), ",") != "orders:read" {
			t.Errorf("after setting policies in the console the key is %v", k)
		}
		if v := validateFrom(policySecret, "10.1.2.3"); !v.GetValid() {
			t.Errorf("Validate from 10.1.2.3 (allowed) = %v, want valid", v)
		}
		if v := validateFrom(policySecret, "172.16.0.1"); v.GetValid() || v.GetReason() != keywardv1.ValidateResponse_REASON_IP_NOT_ALLOWED {
			t.Errorf("Validate from 172.16.0.1 (not allowed) = %v, want REASON_IP_NOT_ALLOWED", v)
		}
	})

	step(t, "invalid-cidr", func(t *testing.T) {
		b.t = t
		pcard := cardSel(policyKey.GetKeyId())
		before, err := getKey(policyKey.GetKeyId())
		if err != nil {
			t.Fatal(err)
		}
		b.click(pcard + ` [data-action="edit"]`)
		b.waitJS("the edit dialog", `document.getElementById('key-dialog').open
			&& document.getElementById('f-cidrs').value === '10.0.0.0/8\n192.168.1.0/24'`)
		b.replaceText("#f-name", "Partner gateway (renamed)")
		b.replaceText("#f-cidrs", "10.0.0.0/8\n10.0.0.300/24")
		b.click("#key-form-submit")
		b.waitJS("the field error", `(() => { const e = document.getElementById('f-cidrs-error');
			return !e.hidden && e.textContent.trim() !== '' && document.getElementById('key-dialog').open
				&& document.getElementById('f-cidrs').getAttribute('aria-invalid') === 'true'
				&& document.activeElement.id === 'f-cidrs'
				&& !document.getElementById('key-form-error').hidden
				&& document.getElementById('key-form-error').textContent.includes('IP allow-list')
				&& !document.getElementById('key-dialog').dataset.busy; })()`)
		b.shot("invalid-cidr")
		if got := evalJS[string](b, `document.getElementById('f-cidrs').value`); got != "10.0.0.0/8\n10.0.0.300/24" {
			t.Errorf("after the refusal the allow-list field holds %q, want what was typed", got)
		}
		if got := evalJS[string](b, `document.getElementById('f-name').value`); got != "Partner gateway (renamed)" {
			t.Errorf("after the refusal the name field holds %q, want what was typed", got)
		}
		k, err := getKey(policyKey.GetKeyId())
		if err != nil {
			t.Fatal(err)
		}
		if k.GetEtag() != before.GetEtag() || k.GetDisplayName() != "Partner gateway" ||
			strings.Join(k.GetAllowedCidrs(), ",") != "10.0.0.0/8,192.168.1.0/24" {
			t.Errorf("a refused edit changed the key: %v", k)
		}
		if !strings.Contains(b.text(pcard), "Partner gateway") || strings.Contains(b.text(pcard), "renamed") {
			t.Errorf("a refused edit changed the card: %q", b.text(pcard))
		}

		// Correcting the field takes the error away, and saving works.
		b.replaceText("#f-cidrs", "10.0.0.0/8")
		b.waitJS("the field error to go", `document.getElementById('f-cidrs-error').hidden
			&& !document.getElementById('f-cidrs').hasAttribute('aria-invalid')`)
		b.click("#key-form-submit")
		b.waitJS("the card to update", fmt.Sprintf(`!document.getElementById('key-dialog').open
			&& document.querySelector(%q).textContent.includes('Partner gateway (renamed)')`, pcard))
		if text := b.text(pcard); !strings.Contains(text, "IP: 10.0.0.0/8") {
			t.Errorf("the card does not show the one allowed range: %q", text)
		}
		if got := b.lastUpdateMask(policyKey.GetKeyId()); got != "display_name,allowed_cidrs" {
			t.Errorf("the corrected edit sent update_mask=%q, want display_name,allowed_cidrs", got)
		}
		k, err = getKey(policyKey.GetKeyId())
		if err != nil {
			t.Fatal(err)
		}
		if k.GetDisplayName() != "Partner gateway (renamed)" || strings.Join(k.GetAllowedCidrs(), ",") != "10.0.0.0/8" ||
			k.GetRateLimit().GetLimit() != 100 || k.GetQuota().GetLimit() != 1000 {
			t.Errorf("after the corrected edit the key is %v", k)
		}
		b.replaceText("#search", "")
		b.waitCards("every key again", fmt.Sprintf(`ids.includes(%q)`, keyID))
	})

	step(t, "generate-with-quota", func(t *testing.T) {
		b.t = t
		b.click("#generate")
		b.waitJS("the generate dialog", `document.getElementById('key-dialog').open && document.activeElement.id === 'f-name'
			&& !document.getElementById('f-policies').open`)
		b.do("name it", chromedp.SendKeys(chromedp.CSS("#f-name"), "Metered partner"))
		b.click("#f-policies > summary")
		b.do("set a quota", chromedp.SendKeys(chromedp.CSS("#f-quota-limit"), "5000"))
		b.selectOption("#f-quota-refill", "REFILL_MONTHLY")
		fiveThousand := evalJS[string](b, `(5000).toLocaleString()`)
		b.waitJS("the policies summary", fmt.Sprintf(`document.getElementById('f-policies-summary').textContent.includes(%q)`,
			"quota "+fiveThousand+" monthly"))
		b.shot("generate-with-quota")
		b.click("#key-form-submit")
		b.waitJS("the secret dialog", `document.getElementById('secret-dialog').open && document.getElementById('secret-value').value !== ''`)
		metered := evalJS[string](b, `document.getElementById('secret-value').value`)
		secrets = append(secrets, metered)
		b.click("#secret-done")
		b.waitJS("the secret dialog to close", `!document.getElementById('secret-dialog').open`)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		found, err := kc.ListKeys(admin(ctx), &keywardv1.ListKeysRequest{Query: metered})
		if err != nil || len(found.GetKeys()) != 1 {
			t.Fatalf("ListKeys(query=secret): %v, %v", found, err)
		}
		k := found.GetKeys()[0]
		if k.GetDisplayName() != "Metered partner" || k.GetQuota().GetLimit() != 5000 ||
			k.GetQuota().GetRefill() != keywardv1.Quota_REFILL_MONTHLY || k.GetRateLimit() != nil ||
			len(k.GetAllowedCidrs()) != 0 || k.GetExpireTime() != nil {
			t.Errorf("the key generated with a quota is %v", k)
		}
		if text := b.text(cardSel(k.GetKeyId())); !strings.Contains(text, "quota "+fiveThousand+"/"+fiveThousand+" monthly") {
			t.Errorf("the new card does not show its quota: %q", text)
		}
		if v := validate(metered); !v.GetValid() || v.RemainingUses == nil || v.GetRemainingUses() != 4999 {
			t.Errorf("Validate(metered key) = %v, want valid with 4999 uses left", v)
		}
	})

	step(t, "regenerate", func(t *testing.T) {
		b.t = t
		b.click(card + ` [data-action="regenerate"]`)
		b.waitJS("the regenerate warning", `(() => { const d = document.getElementById('confirm-dialog');
			return d.open && d.textContent.includes('must be updated with the new one'); })()`)
		if got := evalJS[string](b, `[...document.querySelectorAll('#confirm-dialog input[name="grace"]')]
			.map(i => (i.checked ? '*' : '') + i.closest('label').textContent.trim()).join('|')`); got != "*Immediately|In 1 hour|In 1 day|In 7 days" {
			t.Errorf("the regenerate dialog's grace-period choices are %q", got)
		}
		b.shot("regenerate-warning")
		b.click("#confirm-ok")
		b.waitJS("the new secret", `document.getElementById('secret-dialog').open && document.getElementById('secret-value').value !== ''`)
		newSecret := evalJS[string](b, `document.getElementById('secret-value').value`)
		if !secretPattern.MatchString(newSecret) || newSecret == secret {
			t.Fatalf("the regenerated secret is %q (old %q)", newSecret, secret)
		}
		secrets = append(secrets, newSecret)
		if evalJS[bool](b, `!document.getElementById('secret-grace').hidden`) {
			t.Errorf("the secret dialog mentions a grace period after a regeneration without one: %q", b.text("#secret-grace"))
		}
		b.shot("regenerated-secret")
		b.click("#secret-done")
		b.waitJS("focus back on Regenerate", fmt.Sprintf(`document.activeElement === document.querySelector(%q)`, card+` [data-action="regenerate"]`))
		if v := validate(secret); v.GetValid() || v.GetReason() != keywardv1.ValidateResponse_REASON_NOT_FOUND {
			t.Errorf("Validate(old secret) after regenerating = %v, want REASON_NOT_FOUND", v)
		}
		if v := validate(newSecret); !v.GetValid() {
			t.Errorf("Validate(new secret) after regenerating = %v, want valid", v)
		}
		if evalJS[bool](b, fmt.Sprintf(`!document.querySelector(%q).hidden`, card+" .card-previous")) {
			t.Errorf("the card shows a previous key after a regeneration without grace: %q", b.text(card+" .card-previous"))
		}
		secret = newSecret
	})

	var graceSecret string // the secret a rotation with a grace period replaced
	step(t, "regenerate-with-grace", func(t *testing.T) {
		b.t = t
		before, err := getKey(keyID)
		if err != nil {
			t.Fatal(err)
		}
		b.click(card + ` [data-action="regenerate"]`)
		b.waitJS("the regenerate dialog", `document.getElementById('confirm-dialog').open`)
		b.click(`#confirm-dialog input[name="grace"][value="3600"]`)
		b.shot("regenerate-grace")
		b.click("#confirm-ok")
		b.waitJS("the new secret", `document.getElementById('secret-dialog').open && document.getElementById('secret-value').value !== ''`)
		newSecret := evalJS[string](b, `document.getElementById('secret-value').value`)
		if !secretPattern.MatchString(newSecret) || newSecret == secret {
			t.Fatalf("the regenerated secret is %q (old %q)", newSecret, secret)
		}
		secrets = append(secrets, newSecret)
		if text := b.text("#secret-grace"); !strings.Contains(text, "The previous key "+before.GetMaskedKey()+" keeps working until") {
			t.Errorf("the secret dialog does not say until when the previous key works: %q", text)
		}
		b.shot("regenerated-secret-grace")
		b.click("#secret-done")
		b.waitJS("the card to show the previous key", fmt.Sprintf(`(() => { const p = document.querySelector(%q);
			return !document.getElementById('secret-dialog').open && !p.hidden && p.textContent.includes('works until'); })()`,
			card+" .card-previous"))
		b.shot("grace-period-card")
		text := b.text(card + " .card-previous")
		if !strings.Contains(text, "Previous key "+before.GetMaskedKey()) || !strings.Contains(text, "in 1 hour") {
			t.Errorf("the card's previous-key line is %q, want the old masked key %s working for 1 hour", text, before.GetMaskedKey())
		}
		k, err := getKey(keyID)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.text(card), k.GetMaskedKey()) {
			t.Errorf("the card does not show the new masked key %s: %q", k.GetMaskedKey(), b.text(card))
		}
		until := time.Until(k.GetPreviousKeyExpireTime().AsTime())
		if k.GetPreviousMaskedKey() != before.GetMaskedKey() || until < 55*time.Minute || until > 61*time.Minute {
			t.Errorf("after regenerating with a 1-hour grace period: previous_masked_key %q (want %q), works for %v more",
				k.GetPreviousMaskedKey(), before.GetMaskedKey(), until)
		}
		if v := validate(secret); !v.GetValid() {
			t.Errorf("Validate(old secret) during the grace period = %v, want valid", v)
		}
		if v := validate(newSecret); !v.GetValid() {
			t.Errorf("Validate(new secret) after regenerating = %v, want valid", v)
		}
		graceSecret, secret = secret, newSecret
	})

	step(t, "delete", func(t *testing.T) {
		b.t = t
		del := card + ` [data-action="delete"]`
		b.click(del)
		b.waitJS("the delete confirmation", `(() => { const d = document.getElementById('confirm-dialog');
			return d.open && d.textContent.includes('cannot be restored'); })()`)
		// Esc cancels: the key stays, focus goes back to the button.
		b.do("press Escape", chromedp.KeyEvent(kb.Escape))
		b.waitJS("the dialog to close, focus back on Delete", fmt.Sprintf(`!document.getElementById('confirm-dialog').open
			&& document.activeElement === document.querySelector(%q)`, del))
		if v := validate(secret); !v.GetValid() {
			t.Fatalf("Validate after cancelling the delete = %v, want valid", v)
		}
		b.click(del)
		b.waitJS("the delete confirmation", `document.getElementById('confirm-dialog').open`)
		b.shot("delete-confirmation")
		b.click("#confirm-ok")
		b.waitCards("the card to go", fmt.Sprintf(`!ids.includes(%q)`, keyID))
		b.waitJS("the delete message", `document.getElementById('toast').textContent.includes('Deleted “MES line 1 (plant A)”')`)
		if v := validate(secret); v.GetValid() || v.GetReason() != keywardv1.ValidateResponse_REASON_NOT_FOUND {
			t.Errorf("Validate after deleting in the console = %v, want REASON_NOT_FOUND", v)
		}
		if graceSecret != "" {
			if v := validate(graceSecret); v.GetValid() || v.GetReason() != keywardv1.ValidateResponse_REASON_NOT_FOUND {
				t.Errorf("Validate(secret in its grace period) after deleting = %v, want REASON_NOT_FOUND", v)
			}
		}
		if _, err := getKey(keyID); status.Code(err) != codes.NotFound {
			t.Errorf("GetKey after deleting in the console: %v, want NotFound", err)
		}
	})

	step(t, "failed-calls-are-shown", func(t *testing.T) {
		b.t = t
		// A key deleted behind the page's back: switching it on fails, and says why.
		stale, _ := createKey(&keywardv1.Key{DisplayName: "Stale key"})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := kc.DisableKey(admin(ctx), &keywardv1.DisableKeyRequest{KeyId: stale.GetKeyId()}); err != nil {
			t.Fatal(err)
		}
		b.replaceText("#search", "Stale key")
		b.waitCards("the stale key", fmt.Sprintf(`ids.join() === %q`, stale.GetKeyId()))
		if _, err := kc.DeleteKey(admin(ctx), &keywardv1.DeleteKeyRequest{KeyId: stale.GetKeyId()}); err != nil {
			t.Fatal(err)
		}
		b.click(cardSel(stale.GetKeyId()) + " .switch")
		b.waitJS("the error banner", `(() => { const e = document.getElementById('error-banner');
			return !e.hidden && e.textContent.includes('Could not switch on “Stale key”')
			&& e.textContent.includes('no longer exists') && /not found/i.test(e.textContent); })()`)
		if ids := b.cardIDs(); len(ids) != 0 {
			t.Errorf("the stale key's card is still shown: %v", ids)
		}
		b.shot("error-banner")
		b.click("#error-dismiss")
		b.waitJS("the banner to go", `document.getElementById('error-banner').hidden`)

		// A request the server refuses: the dialog stays open and shows the server's reason.
		b.click("#generate")
		b.waitJS("the generate dialog", `document.getElementById('key-dialog').open`)
		b.do("fill the form",
			chromedp.SendKeys(chromedp.CSS("#f-name"), "Bad scopes"),
			chromedp.SendKeys(chromedp.CSS("#f-scopes"), "orders:read, no-spaces-or-bangs!"),
		)
		b.click("#key-form-submit")
		b.waitJS("the form error", `(() => { const e = document.getElementById('key-form-error');
			return !e.hidden && e.textContent.includes('scope') && document.getElementById('key-dialog').open; })()`)
		b.shot("form-error")
		b.do("press Escape", chromedp.KeyEvent(kb.Escape))
		b.waitJS("the dialog to close", `!document.getElementById('key-dialog').open`)
		b.replaceText("#search", "")
	})

	step(t, "recoverable-needs-a-master-key", func(t *testing.T) {
		b.t = t
		// This server has no master key: Keyward refuses a recoverable key,
		// and its reason shows next to the box, with nothing created.
		b.click("#generate")
		b.waitJS("the generate dialog", `document.getElementById('key-dialog').open
			&& !document.getElementById('f-recoverable').checked && !document.getElementById('f-recoverable').disabled`)
		b.do("name it", chromedp.SendKeys(chromedp.CSS("#f-name"), "Wants a second look"))
		b.click("#f-recoverable")
		b.click("#key-form-submit")
		b.waitJS("the refusal next to the box", `(() => { const e = document.getElementById('f-recoverable-error');
			return !e.hidden && e.textContent.includes('KEYWARD_MASTER_KEY') && document.getElementById('key-dialog').open
				&& document.getElementById('f-recoverable').getAttribute('aria-invalid') === 'true'
				&& document.activeElement.id === 'f-recoverable'
				&& document.getElementById('key-form-error').textContent.includes('Untick'); })()`)
		b.shot("recoverable-refused")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if found, err := kc.ListKeys(admin(ctx), &keywardv1.ListKeysRequest{Query: "Wants a second look"}); err != nil || len(found.GetKeys()) != 0 {
			t.Fatalf("after the refusal ListKeys finds %v (%v), want nothing", found.GetKeys(), err)
		}
		b.click("#f-recoverable") // untick: the error goes, and the key is made, shown once
		b.waitJS("the error to go", `document.getElementById('f-recoverable-error').hidden
			&& !document.getElementById('f-recoverable').hasAttribute('aria-invalid')`)
		b.click("#key-form-submit")
		b.waitJS("the secret dialog", `document.getElementById('secret-dialog').open && document.getElementById('secret-value').value !== ''`)
		once := evalJS[string](b, `document.getElementById('secret-value').value`)
		secrets = append(secrets, once)
		if w := b.text("#secret-warning"); !strings.Contains(w, "only time") {
			t.Errorf("the secret dialog of a key that is not recoverable says %q", w)
		}
		b.click("#secret-done")
		b.waitJS("the secret dialog to close", `!document.getElementById('secret-dialog').open`)
		found, err := kc.ListKeys(admin(ctx), &keywardv1.ListKeysRequest{Query: once})
		if err != nil || len(found.GetKeys()) != 1 || found.GetKeys()[0].GetRecoverable() {
			t.Fatalf("ListKeys(query=secret) = %v (%v), want one key, not recoverable", found.GetKeys(), err)
		}
	})

	step(t, "paging", func(t *testing.T) {
		b.t = t
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for i := range 150 {
			if _, err := kc.CreateKey(admin(ctx), &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: fmt.Sprintf("bulk-%03d", i)}}); err != nil {
				t.Fatal(err)
			}
		}
		b.replaceText("#search", "bulk-")
		b.waitCards("the first page", `ids.length === 100`)
		b.waitJS("the more-to-come status", `document.getElementById('list-status').textContent.includes('more load as you scroll')
			&& !document.getElementById('more').hidden`)
		b.do("scroll to the end", chromedp.ScrollIntoView(chromedp.CSS("#load-more")))
		b.waitCards("the second page", `ids.length === 150 && new Set(ids).size === 150`)
		b.waitJS("the end of the list", `document.getElementById('more').hidden
			&& document.getElementById('list-status').textContent.includes('150 matching keys')`)
		b.replaceText("#search", "")
		b.waitCards("every key again", `ids.length === 100`)
	})

	step(t, "phone", func(t *testing.T) {
		b.t = t
		b.do("a phone-sized screen", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
		b.do("scroll to the top", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
		b.waitJS("layout", `document.documentElement.clientWidth === 390`)
		if w := evalJS[int](b, `document.documentElement.scrollWidth`); w > 390 {
			t.Errorf("the key list is %dpx wide on a 390px screen", w)
		}
		b.shot("phone-key-list")
		b.click("#generate")
		b.waitJS("the generate dialog", `document.getElementById('key-dialog').open`)
		if w := evalJS[float64](b, `document.getElementById('key-dialog').getBoundingClientRect().width`); w > 390 {
			t.Errorf("the generate dialog is %.0fpx wide on a 390px screen", w)
		}
		b.shot("phone-generate")
		b.click("#f-policies > summary")
		b.waitJS("the policies", `document.getElementById('f-policies').open`)
		if w := evalJS[int](b, `(() => { const d = document.getElementById('key-dialog'); return d.scrollWidth - d.clientWidth; })()`); w > 0 {
			t.Errorf("the generate dialog's policies overflow it by %dpx on a 390px screen", w)
		}
		b.do("show the rate limit", chromedp.ScrollIntoView(chromedp.CSS("#f-rate-limit")))
		b.shot("phone-generate-policies")
		b.do("press Escape", chromedp.KeyEvent(kb.Escape))
		b.waitJS("the dialog to close", `!document.getElementById('key-dialog').open`)
		b.do("back to a desktop screen", chromedp.EmulateViewport(1280, 900))
	})

	step(t, "sign-out", func(t *testing.T) {
		b.t = t
		b.click("#sign-out")
		b.waitJS("the sign-in form", `!document.getElementById('signin-view').hidden && document.getElementById('keys-view').hidden`)
		if got := evalJS[string](b, `sessionStorage.getItem('keyward.adminKey') ?? ''`); got != "" {
			t.Errorf("sessionStorage still holds the admin key after sign-out")
		}
		if n := evalJS[int](b, `document.querySelectorAll('li.card').length`); n != 0 {
			t.Errorf("%d cards still in the page after sign-out", n)
		}
		b.navigate(s.BaseURL + "/")
		b.waitJS("the sign-in form after a reload", `!document.getElementById('signin-view').hidden`)
	})

	t.Run("nothing-leaked", func(t *testing.T) {
		b.checkNothingLeaked(t, secrets)
		b.mu.Lock()
		defer b.mu.Unlock()
		searches := 0
		for _, u := range b.urls {
			if strings.Contains(u, "query=") {
				t.Errorf("a request puts a search into its URL: %s", u)
			}
			if strings.HasSuffix(u, "/v1/keys:search") {
				searches++
			}
		}
		if searches == 0 {
			t.Error("the page never called POST /v1/keys:search")
		}
	})
}

// TestConsoleAccountability drives the console's accountability parts in a
// headless Chromium against a `keyward serve` with a master key
// (KEYWARD_MASTER_KEY) whose usage counts reach the store every 200 ms:
// generate a recoverable key; after a reload (the page no longer holds its
// secret), Copy on its card reveals it, and the clipboard's text validates
// over gRPC; the key's page shows when it was last used, a 24-hour usage
// chart whose summary counts the validations made over gRPC, and its
// activity (create, update, reveal), each by the admin key. Report leak
// wants a reason, then switches the key off (Validate: REASON_DISABLED) and
// the Activity view shows key.leak_reported with that reason, pages with
// Load more and narrows to one key. A leak answered by regenerating shows
// the new secret once; a reveal over the rate limit is an error message, the
// clipboard untouched. A key's page opens from its URL, and fits a phone.
func TestConsoleAccountability(t *testing.T) {
	chromium := chromiumPath(t)
	master := make([]byte, 32)
	if _, err := rand.Read(master); err != nil {
		t.Fatal(err)
	}
	s := startServerWith(t, serverOptions{
		DataDir: t.TempDir(),
		Args:    []string{"--usage-flush-interval", "200ms"},
		Env:     []string{"KEYWARD_MASTER_KEY=" + base64.StdEncoding.EncodeToString(master)},
	})
	kc := keyClient(t, s)
	admin := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.AdminKey), cancel
	}
	validate := func(secret string, scopes ...string) *keywardv1.ValidateResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := kc.Validate(ctx, &keywardv1.ValidateRequest{Key: secret, RequiredScopes: scopes})
		if err != nil {
			t.Fatalf("Validate over gRPC: %v", err)
		}
		return resp
	}
	getKey := func(id string) *keywardv1.Key {
		t.Helper()
		ctx, cancel := admin()
		defer cancel()
		resp, err := kc.GetKey(ctx, &keywardv1.GetKeyRequest{KeyId: id})
		if err != nil {
			t.Fatalf("GetKey %s: %v", id, err)
		}
		return resp.GetKey()
	}
	// auditEvents is the trail over gRPC, newest first: all of it, or one key's.
	auditEvents := func(keyID string) []*keywardv1.AuditEvent {
		t.Helper()
		ctx, cancel := admin()
		defer cancel()
		var out []*keywardv1.AuditEvent
		token := ""
		for {
			resp, err := kc.ListAuditEvents(ctx, &keywardv1.ListAuditEventsRequest{KeyId: keyID, PageSize: 1000, PageToken: token})
			if err != nil {
				t.Fatalf("ListAuditEvents: %v", err)
			}
			out = append(out, resp.GetAuditEvents()...)
			if token = resp.GetNextPageToken(); token == "" {
				return out
			}
		}
	}
	adminKeyID := func() string {
		ctx, cancel := admin()
		defer cancel()
		resp, err := kc.ListKeys(ctx, &keywardv1.ListKeysRequest{Query: s.AdminKey})
		if err != nil || len(resp.GetKeys()) != 1 {
			t.Fatalf("find the admin key: %v, %d keys", err, len(resp.GetKeys()))
		}
		return resp.GetKeys()[0].GetKeyId()
	}()

	b := newBrowser(t, chromium, s.BaseURL)
	secrets := []string{s.AdminKey}
	var keyID, secret, card string

	step(t, "sign-in", func(t *testing.T) {
		b.t = t
		// More events than one page of the activity log holds.
		ctx, cancel := admin()
		defer cancel()
		for i := range 55 {
			if _, err := kc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: fmt.Sprintf("fleet-%02d", i)}}); err != nil {
				t.Fatal(err)
			}
		}
		b.navigate(s.BaseURL + "/")
		b.waitJS("the sign-in form", `!document.getElementById('signin-view').hidden`)
		b.replaceText("#signin-key", s.AdminKey+"\n")
		b.waitCards("the keys", fmt.Sprintf(`ids.length === 56 && ids.includes(%q)`, adminKeyID))
		if !evalJS[bool](b, `!document.getElementById('nav').hidden
			&& document.getElementById('nav-keys').getAttribute('aria-current') === 'page'
			&& !document.getElementById('nav-activity').hasAttribute('aria-current')`) {
			t.Error("after sign-in the navigation is hidden, or does not mark API keys as the current page")
		}
	})

	step(t, "generate-recoverable", func(t *testing.T) {
		b.t = t
		b.click("#generate")
		b.waitJS("the generate dialog", `document.getElementById('key-dialog').open && document.activeElement.id === 'f-name'
			&& !document.getElementById('f-recoverable').checked`)
		if label := b.text(`label.check`); !strings.Contains(label, "Recoverable (can be copied again later)") {
			t.Errorf("the recoverable box is labelled %q", label)
		}
		b.do("fill the form",
			chromedp.SendKeys(chromedp.CSS("#f-name"), "Billing service"),
			chromedp.SendKeys(chromedp.CSS("#f-scopes"), "invoices:read"),
		)
		b.click("#f-recoverable")
		b.shot("generate-recoverable")
		b.click("#key-form-submit")
		b.waitJS("the secret dialog", `document.getElementById('secret-dialog').open && document.getElementById('secret-value').value !== ''`)
		secret = evalJS[string](b, `document.getElementById('secret-value').value`)
		secrets = append(secrets, secret)
		if w := b.text("#secret-warning"); !strings.Contains(w, "can show it again") || strings.Contains(w, "only time") {
			t.Errorf("the secret dialog of a recoverable key says %q", w)
		}
		b.click("#secret-done")
		b.waitJS("the secret dialog to close", `!document.getElementById('secret-dialog').open`)
		ctx, cancel := admin()
		defer cancel()
		found, err := kc.ListKeys(ctx, &keywardv1.ListKeysRequest{Query: secret})
		if err != nil || len(found.GetKeys()) != 1 {
			t.Fatalf("ListKeys(query=secret): %v, %v", found, err)
		}
		k := found.GetKeys()[0]
		keyID, card = k.GetKeyId(), cardSel(k.GetKeyId())
		if !k.GetRecoverable() || k.GetDisplayName() != "Billing service" {
			t.Fatalf("the key generated as recoverable is %v", k)
		}
		if text := b.text(card + " .badges"); !strings.Contains(text, "recoverable") {
			t.Errorf("the card's badges are %q, want recoverable", text)
		}
	})

	step(t, "copy-later", func(t *testing.T) {
		b.t = t
		// A reload forgets the secret the page was given: Copy must ask Keyward.
		b.navigate(s.BaseURL + "/")
		b.waitCards("the keys after a reload", fmt.Sprintf(`ids.includes(%q)`, keyID))
		// One card, so clicks land where they aim (cards off screen take their size only when shown).
		b.replaceText("#search", "Billing service")
		b.waitCards("the key", fmt.Sprintf(`ids.join() === %q`, keyID))
		if n := evalJS[string](b, fmt.Sprintf(`document.querySelector(%q).hidden + ''`, card+" .card-secret-note")); n != "true" {
			t.Error("after a reload the card still says its secret is available")
		}
		copyBtn := card + ` [data-action="copy"]`
		if got := b.attr(copyBtn, "aria-disabled"); got != "" {
			t.Errorf("Copy on a recoverable key's card is aria-disabled=%q", got)
		}
		b.setClipboard("nothing copied yet")
		b.click(copyBtn)
		b.waitJS("the copy message", `(() => { const t = document.getElementById('toast');
			return t.textContent.includes('Copied the key of “Billing service”') && t.textContent.includes('activity log')
				&& !t.classList.contains('error'); })()`)
		clip := b.clipboard()
		if clip != secret {
			t.Errorf("Copy on a recoverable key's card after a reload: the clipboard holds %q, want the key's secret", clip)
		}
		if v := validate(clip); !v.GetValid() || v.GetKey().GetKeyId() != keyID {
			t.Errorf("Validate(the clipboard's text) = %v, want valid for %s", v, keyID)
		}
	})

	step(t, "edit", func(t *testing.T) {
		b.t = t
		b.click(card + ` [data-action="edit"]`)
		b.waitJS("the edit dialog", `document.getElementById('key-dialog').open && document.getElementById('f-name').value === 'Billing service'`)
		if !evalJS[bool](b, `document.getElementById('f-recoverable').checked && document.getElementById('f-recoverable').disabled`) {
			t.Error("the edit dialog of a recoverable key does not show the box ticked and fixed")
		}
		b.replaceText("#f-description", "Invoices for the EU shop")
		b.click("#key-form-submit")
		b.waitJS("the card to update", fmt.Sprintf(`!document.getElementById('key-dialog').open
			&& document.querySelector(%q).textContent.includes('Invoices for the EU shop')`, card))
	})

	step(t, "details-usage", func(t *testing.T) {
		b.t = t
		// 5 valid in all (one above, from the clipboard) and 2 refused: a scope the key lacks.
		for range 4 {
			if v := validate(secret); !v.GetValid() {
				t.Fatalf("Validate = %v, want valid", v)
			}
		}
		for range 2 {
			if v := validate(secret, "invoices:write"); v.GetReason() != keywardv1.ValidateResponse_REASON_INSUFFICIENT_SCOPE {
				t.Fatalf("Validate(scope invoices:write) = %v, want REASON_INSUFFICIENT_SCOPE", v)
			}
		}
		// The counts reach the store with the next flush.
		deadline := time.Now().Add(15 * time.Second)
		for {
			ctx, cancel := admin()
			u, err := kc.GetKeyUsage(ctx, &keywardv1.GetKeyUsageRequest{KeyId: keyID})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			var valid, refused int64
			for _, bk := range u.GetBuckets() {
				for reason, n := range bk.GetCounts() {
					if reason == "REASON_VALID" {
						valid += n
					} else {
						refused += n
					}
				}
			}
			if valid == 5 && refused == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GetKeyUsage counts %d valid, %d refused; want 5 and 2", valid, refused)
			}
			time.Sleep(100 * time.Millisecond)
		}

		b.click(card + " .card-details")
		b.waitJS("the key's page", fmt.Sprintf(`!document.getElementById('detail-view').hidden && document.getElementById('keys-view').hidden
			&& location.hash === %q && document.getElementById('detail-title').textContent === 'Billing service'
			&& document.activeElement.id === 'detail-title'`, "#/keys/"+keyID))
		b.waitJS("the usage summary", `document.getElementById('usage-summary').textContent === '5 valid, 2 refused in the last 24 h'`)
		if n := evalJS[int](b, `document.querySelectorAll('#usage-chart svg .slot').length`); n != 24 {
			t.Errorf("the usage chart has %d hours, want 24", n)
		}
		if !evalJS[bool](b, `document.querySelectorAll('#usage-chart svg .bar.valid').length > 0
			&& document.querySelectorAll('#usage-chart svg .bar.refused').length > 0`) {
			t.Error("the usage chart draws no valid or no refused bar")
		}
		if label := b.attr("#usage-chart svg", "aria-label"); !strings.Contains(label, "5 valid, 2 refused in the last 24 h") {
			t.Errorf("the chart's accessible name is %q", label)
		}
		if text := b.text("#usage-refused"); !strings.Contains(text, "2 missing scope") {
			t.Errorf("the refusals are summed up as %q, want 2 missing scope", text)
		}
		if text := b.text("#usage-rows"); !strings.Contains(text, "5") || !strings.Contains(text, "2") {
			t.Errorf("the hourly table reads %q", text)
		}
		if text := b.text("#detail-last-used"); text == "" || strings.Contains(text, "Never") {
			t.Errorf("the key's page says it was last used %q", text)
		}
		if text := b.text("#detail-secret"); !strings.Contains(text, "Recoverable") {
			t.Errorf("the key's page describes its secret as %q", text)
		}

		// The key's own activity: newest first, each by the admin key.
		b.waitJS("the key's activity", `document.querySelectorAll('#detail-audit .event').length === 3`)
		b.shot("key-details")
		if got := evalJS[string](b, `[...document.querySelectorAll('#detail-audit .event')].map(e => e.dataset.action).join()`); got != "key.update,key.reveal,key.create" {
			t.Errorf("the key's page lists the actions %s, want key.update,key.reveal,key.create", got)
		}
		if got := evalJS[string](b, `[...document.querySelectorAll('#detail-audit .event .event-actor-id')].map(e => e.textContent).join()`); got != strings.Repeat(adminKeyID+",", 2)+adminKeyID {
			t.Errorf("the actors shown are %s, want the admin key %s each time", got, adminKeyID)
		}
		if text := b.text(`#detail-audit .event[data-action="key.update"]`); !strings.Contains(text, "Edited") ||
			!strings.Contains(text, "Description") || !strings.Contains(text, "Invoices for the EU shop") || !strings.Contains(text, "(you)") {
			t.Errorf("the update's entry reads %q", text)
		}
		if text := b.text(`#detail-audit .event[data-action="key.reveal"]`); !strings.Contains(text, "revealed") {
			t.Errorf("the reveal's entry reads %q", text)
		}
		var want []string
		for _, e := range auditEvents(keyID) {
			want = append(want, e.GetAction())
			if e.GetActorKeyId() != adminKeyID {
				t.Errorf("over gRPC, %s was by %q, want the admin key", e.GetAction(), e.GetActorKeyId())
			}
		}
		if strings.Join(want, ",") != "key.update,key.reveal,key.create" {
			t.Errorf("over gRPC the key's events are %v", want)
		}
	})

	const reason = "Pasted into the #ops chat by mistake"
	step(t, "report-leak", func(t *testing.T) {
		b.t = t
		b.click("#detail-leak")
		b.waitJS("the leak dialog", `(() => { const d = document.getElementById('confirm-dialog');
			return d.open && d.textContent.includes('What to do with the key')
				&& document.activeElement === d.querySelector('input[value="ACTION_DISABLE"]')
				&& document.activeElement.checked; })()`)
		// A reason is required.
		b.click("#confirm-ok")
		b.waitJS("the missing reason", `(() => { const e = document.getElementById('confirm-error');
			return !e.hidden && e.textContent.includes('Say why') && document.activeElement.id === 'leak-reason'
				&& document.getElementById('confirm-dialog').open; })()`)
		if v := validate(secret); !v.GetValid() {
			t.Fatalf("Validate after a report without a reason = %v, want still valid", v)
		}
		b.do("give a reason", chromedp.SendKeys(chromedp.CSS("#leak-reason"), reason))
		b.shot("report-leak")
		b.click("#confirm-ok")
		b.waitJS("the report's confirmation", `!document.getElementById('confirm-dialog').open
			&& document.getElementById('toast').textContent.includes('Reported “Billing service” as leaked and switched it off')`)
		if v := validate(secret); v.GetValid() || v.GetReason() != keywardv1.ValidateResponse_REASON_DISABLED {
			t.Errorf("Validate after reporting the leak = %v, want REASON_DISABLED", v)
		}
		if k := getKey(keyID); k.GetState() != keywardv1.Key_STATE_DISABLED {
			t.Errorf("after the leak report the key is %v", k)
		}
		b.waitJS("the key's page to show it off, and the report", `document.getElementById('detail-state').textContent.includes('Inactive')
			&& document.querySelector('#detail-audit .event')?.dataset.action === 'key.leak_reported'`)
		if text := b.text(card); !strings.Contains(text, "Inactive") {
			t.Errorf("the card does not show the key off: %q", text)
		}
	})

	step(t, "activity", func(t *testing.T) {
		b.t = t
		b.click("#nav-activity")
		b.waitJS("the activity view", `!document.getElementById('activity-view').hidden && location.hash === '#/activity'
			&& document.getElementById('nav-activity').getAttribute('aria-current') === 'page'
			&& document.activeElement.id === 'activity-title'`)
		b.waitJS("the newest entry, the leak report", `document.querySelector('#activity-audit .event')?.dataset.action === 'key.leak_reported'`)
		top := b.text("#activity-audit .event")
		for _, want := range []string{"Reported as leaked", "key.leak_reported", "Billing service", "Switched off", reason, adminKeyID, "(you)"} {
			if !strings.Contains(top, want) {
				t.Errorf("the leak report's entry does not say %q: %q", want, top)
			}
		}
		b.shot("activity")

		all := auditEvents("")
		if len(all) <= 50 {
			t.Fatalf("only %d audit events; the test wants more than a page", len(all))
		}
		b.waitJS("the first page", `document.querySelectorAll('#activity-audit .event').length === 50
			&& !document.querySelector('#activity-audit .more').hidden`)
		b.click("#activity-audit .audit-more")
		b.waitJS("every event", fmt.Sprintf(`document.querySelectorAll('#activity-audit .event').length === %d
			&& document.querySelector('#activity-audit .more').hidden
			&& document.querySelector('#activity-audit .audit-status').textContent.includes('Showing all')`, len(all)))
		got := evalJS[[]string](b, `[...document.querySelectorAll('#activity-audit .event')].map(e => e.dataset.sequence)`)
		for i, e := range all {
			if got[i] != fmt.Sprint(e.GetSequence()) {
				t.Fatalf("entry %d is event %s, want %d (newest first)", i, got[i], e.GetSequence())
			}
		}

		// From an entry to its key's page, and from there to its activity alone.
		b.click(`#activity-audit .event[data-action="key.leak_reported"] .event-key a`)
		b.waitJS("the key's page", fmt.Sprintf(`!document.getElementById('detail-view').hidden && location.hash === %q`, "#/keys/"+keyID))
		b.click("#detail-activity-link")
		b.waitJS("the activity of one key", fmt.Sprintf(`(() => {
			const events = [...document.querySelectorAll('#activity-audit .event')];
			return !document.getElementById('activity-view').hidden && !document.getElementById('activity-filter').hidden
				&& document.getElementById('activity-audit').querySelector('.events').getAttribute('aria-busy') === 'false'
				&& events.length === 4 && events.every(e => e.dataset.keyId === %q); })()`, keyID))
		if text := b.text("#activity-filter"); !strings.Contains(text, "Billing service") || !strings.Contains(text, keyID) {
			t.Errorf("the filter note reads %q", text)
		}
		b.click("#activity-filter > a")
		b.waitJS("every key's activity again", fmt.Sprintf(`document.getElementById('activity-filter').hidden
			&& document.querySelectorAll('#activity-audit .event').length === 50 && location.hash === '#/activity'
			&& [...document.querySelectorAll('#activity-audit .event')].some(e => e.dataset.keyId !== %q)`, keyID))
		b.click("#nav-keys")
		b.waitJS("the key list", `!document.getElementById('keys-view').hidden && document.getElementById('activity-view').hidden`)
	})

	var secondID, second string
	step(t, "leak-regenerate", func(t *testing.T) {
		b.t = t
		ctx, cancel := admin()
		defer cancel()
		resp, err := kc.CreateKey(ctx, &keywardv1.CreateKeyRequest{Key: &keywardv1.Key{DisplayName: "Reporting pipeline", Recoverable: true}})
		if err != nil {
			t.Fatal(err)
		}
		secondID, second = resp.GetKey().GetKeyId(), resp.GetSecret()
		secrets = append(secrets, second)
		b.replaceText("#search", "Reporting pipeline")
		b.waitCards("the second key", fmt.Sprintf(`ids.join() === %q`, secondID))
		b.click(cardSel(secondID) + " .card-details")
		b.waitJS("its page", `document.getElementById('detail-title').textContent === 'Reporting pipeline'`)
		b.click("#detail-leak")
		b.waitJS("the leak dialog", `document.getElementById('confirm-dialog').open`)
		b.click(`#confirm-dialog input[value="ACTION_REGENERATE"]`)
		b.do("give a reason", chromedp.SendKeys(chromedp.CSS("#leak-reason"), "Printed in a CI log"))
		b.click("#confirm-ok")
		b.waitJS("the new secret", `document.getElementById('secret-dialog').open && document.getElementById('secret-value').value !== ''`)
		fresh := evalJS[string](b, `document.getElementById('secret-value').value`)
		secrets = append(secrets, fresh)
		if text := b.text("#secret-grace"); !strings.Contains(text, "leaked key no longer works") {
			t.Errorf("the secret dialog after a leak says %q", text)
		}
		b.shot("leak-regenerated")
		b.click("#secret-done")
		b.waitJS("focus back on Report leak", `!document.getElementById('secret-dialog').open && document.activeElement.id === 'detail-leak'`)
		if v := validate(second); v.GetValid() {
			t.Errorf("Validate(leaked secret) after regenerating = %v, want refused", v)
		}
		if v := validate(fresh); !v.GetValid() {
			t.Errorf("Validate(new secret) = %v, want valid", v)
		}
		if k := getKey(secondID); !k.GetRecoverable() {
			t.Errorf("after a leak's regeneration the key is no longer recoverable: %v", k)
		}
		evs := auditEvents(secondID)
		if len(evs) == 0 || evs[0].GetAction() != "key.leak_reported" || evs[0].GetDetail() != "regenerate: Printed in a CI log" {
			t.Errorf("the newest event of the second key is %v", evs[0])
		}
	})

	step(t, "reveal-rate-limited", func(t *testing.T) {
		b.t = t
		// Use up this admin's reveals for the minute.
		for i := 0; ; i++ {
			ctx, cancel := admin()
			_, err := kc.RevealKey(ctx, &keywardv1.RevealKeyRequest{KeyId: secondID})
			cancel()
			if status.Code(err) == codes.ResourceExhausted {
				break
			}
			if err != nil || i > 20 {
				t.Fatalf("RevealKey #%d: %v; want RESOURCE_EXHAUSTED within 10 a minute", i+1, err)
			}
		}
		// The key's page, loaded afresh from its URL: the page no longer holds the new secret.
		if u := evalJS[string](b, `location.href`); u != s.BaseURL+"/#/keys/"+secondID {
			t.Fatalf("the key's page is at %s", u)
		}
		b.do("reload", chromedp.Reload())
		b.waitJS("the key's page", `!document.getElementById('detail-view').hidden
			&& document.getElementById('detail-title').textContent === 'Reporting pipeline'
			&& document.getElementById('detail-copy').title.includes('reveals')`)
		b.setClipboard("nothing copied yet")
		b.click("#detail-copy")
		b.waitJS("the refusal", `(() => { const t = document.getElementById('toast');
			return t.classList.contains('error') && t.textContent.includes('Could not copy the key of “Reporting pipeline”')
				&& t.textContent.includes('limits how many secrets can be revealed'); })()`)
		b.shot("reveal-refused")
		if got := b.clipboard(); got != "nothing copied yet" {
			t.Errorf("a refused reveal changed the clipboard to %q", got)
		}
	})

	step(t, "phone", func(t *testing.T) {
		b.t = t
		b.do("a phone-sized screen", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
		b.waitJS("layout", `document.documentElement.clientWidth === 390`)
		if w := evalJS[int](b, `document.documentElement.scrollWidth`); w > 390 {
			t.Errorf("the key's page is %dpx wide on a 390px screen", w)
		}
		b.shot("phone-key-details")
		b.click("#nav-activity")
		b.waitJS("the activity", `document.querySelectorAll('#activity-audit .event').length > 0`)
		if w := evalJS[int](b, `document.documentElement.scrollWidth`); w > 390 {
			t.Errorf("the activity view is %dpx wide on a 390px screen", w)
		}
		b.shot("phone-activity")
		b.do("back to a desktop screen", chromedp.EmulateViewport(1280, 900))
	})

	t.Run("nothing-leaked", func(t *testing.T) {
		b.checkNothingLeaked(t, secrets)
	})
}

// checkNothingLeaked fails t for anything the page reported (uncaught
// exceptions, console errors, CSP and Trusted Types violations) and for any
// request URL that carries one of secrets.
func (b *browser) checkNothingLeaked(t *testing.T, secrets []string) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("the page reported: %s", p)
	}
	for _, u := range b.urls {
		for _, sec := range secrets {
			if strings.Contains(u, sec) {
				t.Errorf("a request URL carries a secret: %s", strings.ReplaceAll(u, sec, "<secret>"))
			}
		}
	}
}

// step runs one part of the walk-through; a failed part ends the test, as
// the next parts build on it.
func step(t *testing.T, name string, fn func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, fn) {
		t.FailNow()
	}
}

// seedKeys creates the keys the README's screenshot shows.
func seedKeys(t *testing.T, create func(*keywardv1.Key) (*keywardv1.Key, string), kc keywardv1.KeyServiceClient, admin func(context.Context) context.Context) {
	t.Helper()
	soon := timestamppb.New(time.Now().Add(5 * 24 * time.Hour))
	later := timestamppb.New(time.Now().Add(300 * 24 * time.Hour))
	var mobile *keywardv1.Key
	for _, k := range []*keywardv1.Key{
		{DisplayName: "IoT gateway, hall 3", Description: "Edge gateway forwarding sensor readings", Scopes: []string{"telemetry:write"}, Metadata: map[string]string{"site": "plant-a"},
			AllowedCidrs: []string{"10.20.0.0/16", "10.30.0.0/16"}, RateLimit: &keywardv1.RateLimit{Limit: 100, Period: durationpb.New(time.Second), Burst: 200}},
		{DisplayName: "Analytics export", Description: "Nightly export to the BI warehouse", Scopes: []string{"orders:read", "inventory:read"}, ExpireTime: later},
		{DisplayName: "Mobile app (iOS)", Scopes: []string{"catalog:read", "orders:write"}, RateLimit: &keywardv1.RateLimit{Limit: 600, Period: durationpb.New(time.Minute)}},
		{DisplayName: "Partner: Acme Logistics", Description: "Shipment status callbacks", Scopes: []string{"shipments:read"}, ExpireTime: soon,
			AllowedCidrs: []string{"203.0.113.0/24"}, Quota: &keywardv1.Quota{Limit: 1000, Refill: keywardv1.Quota_REFILL_DAILY}},
		{DisplayName: "Staging smoke tests", Environment: "test", Scopes: []string{"*"}},
	} {
		if created, _ := create(k); k.GetDisplayName() == "Mobile app (iOS)" {
			mobile = created
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A rotation in progress: the card shows the previous key beside the new one.
	if _, err := kc.RegenerateKey(admin(ctx), &keywardv1.RegenerateKeyRequest{KeyId: mobile.GetKeyId(), GracePeriod: durationpb.New(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	resp, err := kc.ListKeys(admin(ctx), &keywardv1.ListKeysRequest{Query: "Staging smoke"})
	if err != nil || len(resp.GetKeys()) != 1 {
		t.Fatalf("find the staging key: %v", err)
	}
	if _, err := kc.DisableKey(admin(ctx), &keywardv1.DisableKeyRequest{KeyId: resp.GetKeys()[0].GetKeyId()}); err != nil {
		t.Fatal(err)
	}
}

func cardSel(keyID string) string { return fmt.Sprintf(`#key-list > li.card[data-key-id=%q]`, keyID) }

// keyClient dials s's gRPC listener with the generated client.
func keyClient(t *testing.T, s *server) keywardv1.KeyServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return keywardv1.NewKeyServiceClient(conn)
}

// chromiumPath finds Debian's chromium (or another Chrome). Missing, it
// fails the test when CI=true and skips it loudly otherwise.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.Require(t, "chromium", errors.New("no chromium, chromium-browser or google-chrome on PATH; "+
		"install it with `apt-get install chromium` or `make ci-deps`"))
	return ""
}

// artifactsDir is where screenshots go: $KEYWARD_ARTIFACTS/console, kept
// after the test, or a temporary directory removed with it.
func artifactsDir(t *testing.T) string {
	t.Helper()
	if root := os.Getenv("KEYWARD_ARTIFACTS"); root != "" {
		dir, err := filepath.Abs(filepath.Join(root, "console"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshots: %s", dir)
		return dir
	}
	dir := t.TempDir()
	t.Logf("screenshots: %s (removed after the test; set KEYWARD_ARTIFACTS=<dir> to keep them)", dir)
	return dir
}

// browser is one headless Chromium tab, with what the page reported.
type browser struct {
	t     *testing.T // the current step, for failures
	ctx   context.Context
	dir   string
	shots int

	mu       sync.Mutex
	problems []string // uncaught exceptions, console errors, CSP violations
	urls     []string // every request the page made
}

const stepTimeout = 20 * time.Second

func newBrowser(t *testing.T, execPath, origin string) *browser {
	t.Helper()
	b := &browser{t: t, dir: artifactsDir(t)}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithListener(b.observe))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b.ctx = ctx
	start, cancelStart := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancelStart()
	go func() {
		<-start.Done()
		if errors.Is(start.Err(), context.DeadlineExceeded) {
			cancel() // a browser that does not start must not hang the test
		}
	}()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", execPath, err)
	}
	// The page may use the clipboard, and the test reads it back.
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		_, err := chromedp.CallBrowser(ctx, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
			Permission: &cdpbrowser.PermissionDescriptor{Name: name}, Setting: cdpbrowser.PermissionSettingGranted, Origin: origin,
		})
		if err != nil {
			t.Fatalf("grant %s: %v", name, err)
		}
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatal(err)
	}
	return b
}

// observe runs in the tab's event loop: it only records.
func (b *browser) observe(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		b.problems = append(b.problems, fmt.Sprintf("uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, msg))
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, strings.Trim(string(a.Value), `"`)+a.Description)
			}
			b.problems = append(b.problems, "console."+string(ev.Type)+": "+strings.Join(parts, " "))
		}
	case *cdplog.EventEntryAdded:
		e := ev.Entry
		// Failed API calls (401, 404, 400) are logged by the network
		// source on purpose; anything else at error level is a problem,
		// CSP and Trusted Types violations included.
		if e.Source != cdplog.EntrySourceNetwork && (e.Level == cdplog.EntryLevelError || e.Source == cdplog.EntrySourceSecurity) {
			b.problems = append(b.problems, fmt.Sprintf("%s %s: %s (%s)", e.Source, e.Level, e.Text, e.URL))
		}
	case *network.EventRequestWillBeSent:
		b.urls = append(b.urls, ev.Request.URL)
	}
}

func (b *browser) fail(format string, args ...any) {
	b.t.Helper()
	b.shot("failure")
	banner := evalJSQuiet[string](b, `(() => { const e = document.getElementById('error-banner'); return e && !e.hidden ? e.textContent : ''; })()`)
	if banner != "" {
		format += "\n(error banner: %s)"
		args = append(args, strings.TrimSpace(banner))
	}
	b.t.Fatalf(format, args...)
}

func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail("%s: %v", what, err)
	}
}

func (b *browser) navigate(url string) {
	b.t.Helper()
	b.do("open "+url, chromedp.Navigate(url))
}

// click clicks sel's centre once a click there reaches it: in view, in the
// same place as at the previous poll (cards off screen take their size only
// once shown, and a list that just changed may still move), and on top.
// Otherwise a busy machine can click where the element was a moment before.
func (b *browser) click(sel string) {
	b.t.Helper()
	b.waitJS(sel+" to hold still", fmt.Sprintf(`(() => {
		const el = document.querySelector(%q);
		if (!el) return false;
		el.scrollIntoView({block: 'nearest', inline: 'nearest'});
		const r = el.getBoundingClientRect();
		const at = [r.x, r.y, r.width, r.height].join();
		const seen = (window.__e2eClickRects ??= new WeakMap());
		const still = seen.get(el) === at;
		seen.set(el, at);
		if (!still || !r.width || !r.height) return false;
		const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
		return hit === el || el.contains(hit);
	})()`, sel))
	b.do("click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// replaceText selects what a field holds and types text over it (an empty
// text deletes it), as a user does.
func (b *browser) replaceText(sel, text string) {
	b.t.Helper()
	if text == "" {
		text = kb.Backspace
	}
	b.do("type into "+sel,
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).select()`, sel)),
		chromedp.SendKeys(chromedp.CSS(sel), text),
	)
}

// selectOption picks an option of a <select>, as choosing it from the list does.
func (b *browser) selectOption(sel, value string) {
	b.t.Helper()
	b.do("choose "+value+" in "+sel, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		const s = document.querySelector(%q);
		s.focus();
		s.value = %q;
		if (s.value !== %q) throw new Error('no option ' + %q);
		s.dispatchEvent(new Event('input', {bubbles: true}));
		s.dispatchEvent(new Event('change', {bubbles: true}));
	})()`, sel, value, value, value)))
}

// waitJS waits until the expression is truthy.
func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	if err != nil {
		b.fail("waiting for %s: %v", what, err)
	}
}

// waitCards waits until cond holds for ids, the key ids of the cards shown
// in order, and the list is settled: not loading, and showing the answer to
// what the search box says (not to a search typed halfway).
func (b *browser) waitCards(what, cond string) {
	b.t.Helper()
	b.waitJS(what, fmt.Sprintf(`(() => {
		const list = document.getElementById('key-list');
		if (list.getAttribute('aria-busy') === 'true') return false;
		if (list.dataset.query !== document.getElementById('search').value.trim()) return false;
		const ids = [...document.querySelectorAll('#key-list > li.card')].map(li => li.dataset.keyId);
		return %s;
	})()`, cond))
}

// lastUpdateMask is the update_mask of the page's last PATCH of keyID.
func (b *browser) lastUpdateMask(keyID string) string {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := len(b.urls) - 1; i >= 0; i-- {
		u, err := url.Parse(b.urls[i])
		if err != nil || u.Path != "/v1/keys/"+keyID || !u.Query().Has("update_mask") {
			continue
		}
		return u.Query().Get("update_mask")
	}
	return ""
}

func (b *browser) cardIDs() []string {
	b.t.Helper()
	return evalJS[[]string](b, `[...document.querySelectorAll('#key-list > li.card')].map(li => li.dataset.keyId)`)
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return evalJS[string](b, fmt.Sprintf(`document.querySelector(%q)?.textContent.replace(/\s+/g, ' ') ?? ''`, sel))
}

func (b *browser) attr(sel, name string) string {
	b.t.Helper()
	return evalJS[string](b, fmt.Sprintf(`document.querySelector(%q)?.getAttribute(%q) ?? ''`, sel, name))
}

// clipboard reads the clipboard through the page (permission granted above).
func (b *browser) clipboard() string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
	if err != nil {
		b.fail("read the clipboard: %v", err)
	}
	return got
}

// setClipboard puts text on the clipboard, so a later read shows whether the page wrote to it.
func (b *browser) setClipboard(text string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`navigator.clipboard.writeText(%q)`, text),
		chromedp.EvalAwaitPromise)); err != nil {
		b.fail("write the clipboard: %v", err)
	}
}

// shot saves a screenshot of the viewport as NN-name.png and returns it.
func (b *browser) shot(name string) []byte {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return nil
	}
	b.shots++
	path := filepath.Join(b.dir, fmt.Sprintf("%02d-%s.png", b.shots, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Errorf("write %s: %v", path, err)
	}
	return png
}

func evalJS[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.fail("evaluate %s: %v", expr, err)
	}
	return v
}

// evalJSQuiet is evalJS for diagnostics: an error gives the zero value.
func evalJSQuiet[T any](b *browser, expr string) T {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	v, _ := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	return v
}
