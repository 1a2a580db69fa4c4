import { createHash } from 'node:crypto';

const MAX_IDENTIFIER_BYTES = 63;

/**
 * `<jobs table><suffix>`, kept within PostgreSQL's 63-byte identifier limit. A table name too
 * long for that is clipped on a character boundary and followed by a hash of the full name,
 * so two long tables sharing a prefix never get the same index name (which IF NOT EXISTS
 * would silently accept).
 */
export function activeSetIndexName(table: string, suffix: string): string {
  const full = `${table}${suffix}`;
  if (Buffer.byteLength(full) <= MAX_IDENTIFIER_BYTES) return full;
  const hash = createHash('md5').update(table).digest('hex').slice(0, 8);
  const room = MAX_IDENTIFIER_BYTES - Buffer.byteLength(suffix) - hash.length - 1;
  return `${clipToBytes(table, room)}_${hash}${suffix}`;
}

function clipToBytes(text: string, maxBytes: number): string {
  let clipped = '';
  let bytes = 0;
  for (const character of text) {
    const size = Buffer.byteLength(character);
    if (bytes + size > maxBytes) break;
    clipped += character;
    bytes += size;
  }
  return clipped;
}
