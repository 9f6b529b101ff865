package node

// CheckStorageForTest measures free space now (with Config.StorageProbe),
// as the storage guard does every StorageCheckEvery.
func (n *Node) CheckStorageForTest() { n.storage.check() }
