package node

// IssueTokenForTest signs a device token with the node's key, for devices
// the tests make up.
func (n *Node) IssueTokenForTest(user, device uint64) string {
	tok, _, err := n.tokens.Issue(user, device)
	if err != nil {
		panic(err)
	}
	return tok
}

// HTTPConnsForTest is the number of HTTP connections the server holds open.
func (n *Node) HTTPConnsForTest() int64 { return n.httpConns.Load() }
