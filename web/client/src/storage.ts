/**
 * Where the client keeps what must survive a reload: the sync cursor, the
 * session index (min_idx), the last seq seen per conversation and the
 * unacknowledged sends. Values are JSON strings. Writes may be slow; the
 * client serializes them.
 */
export interface Storage {
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
}

/** A Storage in memory: nothing survives the process (tests, Node bots). */
export function memoryStorage(): Storage {
  const m = new Map<string, string>();
  return {
    get: async (k) => m.get(k),
    set: async (k, v) => {
      m.set(k, v);
    },
    delete: async (k) => {
      m.delete(k);
    },
  };
}

/**
 * A Storage in the browser's IndexedDB: one object store of strings in the
 * database dbName. Falls back to memory where IndexedDB cannot be opened
 * (private modes of some browsers), so the app still works, only without
 * resuming across reloads.
 */
export function indexedDBStorage(dbName = "parley"): Storage {
  const store = "kv";
  let dbp: Promise<IDBDatabase | null> | undefined;
  const fallback = memoryStorage();
  const open = () =>
    (dbp ??= new Promise<IDBDatabase | null>((resolve) => {
      if (typeof indexedDB === "undefined") return resolve(null);
      const req = indexedDB.open(dbName, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(store);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => resolve(null);
      req.onblocked = () => resolve(null);
    }));
  const run = async <T>(mode: IDBTransactionMode, f: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> => {
    const db = (await open())!;
    return new Promise<T>((resolve, reject) => {
      const tx = db.transaction(store, mode);
      const req = f(tx.objectStore(store));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  };
  return {
    async get(k) {
      if (!(await open())) return fallback.get(k);
      const v = await run("readonly", (s) => s.get(k) as IDBRequest<string | undefined>);
      return typeof v === "string" ? v : undefined;
    },
    async set(k, v) {
      if (!(await open())) return fallback.set(k, v);
      await run("readwrite", (s) => s.put(v, k));
    },
    async delete(k) {
      if (!(await open())) return fallback.delete(k);
      await run("readwrite", (s) => s.delete(k));
    },
  };
}
