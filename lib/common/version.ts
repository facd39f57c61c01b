/** The version, from deno.json (imported, so `deno compile` embeds it). */
import config from "../../deno.json" with { type: "json" };

export const VERSION: string = config.version;
