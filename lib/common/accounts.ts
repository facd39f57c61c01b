/**
 * Users and groups from /etc/passwd and /etc/group, both ways: the watcher
 * records names beside ids in the `stat` metadata, a restore maps them back.
 * Read once per process, lazily. Without the files (a minimal container)
 * there are no names, and ids are used alone, as the Python tablesnap did.
 */
export class Accounts {
  #users: IdFile | undefined;
  #groups: IdFile | undefined;

  userName(uid: number): string | undefined {
    return this.#userFile().names.get(uid);
  }

  groupName(gid: number): string | undefined {
    return this.#groupFile().names.get(gid);
  }

  /** The uid of a user name, or of a number given as text. */
  uid(user: string): number | undefined {
    return /^\d+$/.test(user) ? Number(user) : this.#userFile().ids.get(user);
  }

  /** The gid of a group name, or of a number given as text. */
  gid(group: string): number | undefined {
    return /^\d+$/.test(group) ? Number(group) : this.#groupFile().ids.get(group);
  }

  #userFile(): IdFile {
    return this.#users ??= readIdFile("/etc/passwd");
  }

  #groupFile(): IdFile {
    return this.#groups ??= readIdFile("/etc/group");
  }
}

interface IdFile {
  names: Map<number, string>;
  ids: Map<string, number>;
}

/** `name:x:id:...` lines; the first entry for a name or an id wins, as getpwnam/getpwuid do. */
function readIdFile(path: string): IdFile {
  const file: IdFile = { names: new Map(), ids: new Map() };
  let text = "";
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return file;
  }
  for (const line of text.split("\n")) {
    const [name, , id] = line.split(":");
    if (!name || id === undefined || !/^\d+$/.test(id)) continue;
    if (!file.names.has(Number(id))) file.names.set(Number(id), name);
    if (!file.ids.has(name)) file.ids.set(name, Number(id));
  }
  return file;
}
