// Hand-made DTLS records for the datagram guard's tests: an attacker needs no DTLS library to
// send one, so the tests do not use one either.

/** A DTLS 1.2 record (RFC 6347 §4.1): type, version fefd, epoch, 48-bit sequence, length, fragment. */
export function dtlsRecord(contentType: number, epoch: number, sequence: number, fragment: Buffer): Buffer {
  const header = Buffer.alloc(13);
  header.writeUInt8(contentType, 0);
  header.writeUInt16BE(0xfefd, 1);
  header.writeUInt16BE(epoch, 3);
  header.writeUIntBE(sequence, 5, 6);
  header.writeUInt16BE(fragment.length, 11);
  return Buffer.concat([header, fragment]);
}
