package harness

// AddInitScript runs src in every document the tab loads from now on,
// before the page's own scripts (Page.addScriptToEvaluateOnNewDocument):
// how a test stands in for something a browser extension injects, such as
// a wallet's window.solana.
func (p *Page) AddInitScript(src string) error {
	if err := p.call("Page.enable", map[string]any{}, nil); err != nil {
		return err
	}
	return p.call("Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": src}, nil)
}

// Reload reloads the tab.
func (p *Page) Reload() error {
	return p.call("Page.reload", map[string]any{"ignoreCache": true}, nil)
}
