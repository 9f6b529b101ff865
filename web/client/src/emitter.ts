/** A small typed event emitter: on() returns the function that removes the handler. */
export class Emitter<M extends { [K in keyof M]: unknown }> {
  private handlers = new Map<keyof M, Set<(v: never) => void>>();

  on<K extends keyof M>(type: K, fn: (v: M[K]) => void): () => void {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(fn as (v: never) => void);
    return () => set.delete(fn as (v: never) => void);
  }

  protected emit<K extends keyof M>(type: K, v: M[K]): void {
    const set = this.handlers.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        (fn as (v: M[K]) => void)(v);
      } catch (err) {
        // A failing handler must not break the client's bookkeeping.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}
