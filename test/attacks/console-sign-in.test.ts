// Threat: anyone who can reach the console's sign-in (a control-room PC, the reverse proxy's
// network) guesses passwords, many at once. Before the defence every attempt ran a synchronous
// scrypt on the event loop with no limit: 100 concurrent wrong passwords stalled every other
// request (every supervisor's page, every command reply) for seconds, and guessing was limited
// only by CPU. The defence (ops-console/sign-in.ts): scrypt runs off the event loop, attempts are
// limited per address and per user, and a user with too many failures is locked out for a while;
// a refused attempt is answered 429 (with Retry-After) BEFORE any hashing. This test sends 100
// concurrent wrong passwords to the real console process, checks that at most 20 were hashed and
// that the user is locked, reports how long another signed-in request took during the attack,
// and checks that a hash no longer holds the event loop.
import t from 'tap';
import { hashPassword, verifyPassword } from '../../ops-console/users.ts';
import { startConsole } from '../helpers/console-process.ts';
import { startBroker } from '../helpers/mosquitto.ts';

const attempts = 100;

t.test('100 concurrent wrong passwords neither stall the console nor go on guessing', async (t) => {
  const broker = await startBroker();
  const console_ = await startConsole(broker.url, [
    { user: 'sgt1', operator: 'sgt-0001', password: 'pw-1', roles: ['supervisor'] },
    { user: 'sgt2', operator: 'sgt-0002', password: 'pw-2', roles: ['supervisor'] },
  ]);
  t.teardown(async () => {
    await console_.stop();
    await broker.dispose();
  });
  const bystander = await console_.login('sgt2', 'pw-2');

  const guesses = Array.from({ length: attempts }, (_, i) => console_.call('', 'POST', '/api/login', { user: 'sgt1', password: `guess-${i}` }));
  // Another supervisor's page, one request after another for as long as the attack lasts.
  let over = false;
  const all = Promise.all(guesses).finally(() => { over = true; });
  const during: number[] = [];
  while (!over) {
    const r = await console_.call(bystander, 'GET', '/api/me');
    t.equal(r.status, 200, 'the other supervisor stays signed in', { diagnostic: false });
    during.push(r.ms);
  }
  const answers = await all;
  // Before the defence such a request waited ~3 s behind the hashing. Its time is reported, not
  // asserted (a loaded machine is slow for other reasons): what is asserted is that the limiter
  // refused before hashing (below) and that a hash does not hold the event loop (the next test).
  t.comment(`${during.length} signed-in requests during the attack answered in ${during.map(Math.round).join(', ')} ms`);

  const byStatus = new Map<number, number>();
  for (const a of answers) byStatus.set(a.status, (byStatus.get(a.status) ?? 0) + 1);
  t.comment(`answers: ${JSON.stringify(Object.fromEntries(byStatus))}`);
  const refused = answers.filter((a) => a.status === 429);
  t.ok(refused.length >= attempts - 20, `at most 20 of ${attempts} guesses were even checked (${refused.length} refused with 429)`);
  t.equal(answers.filter((a) => a.status === 200).length, 0, 'no guess signed in');
  t.ok(refused.every((a) => Number(a.headers.get('retry-after')) > 0), 'each refusal says when to try again (Retry-After)');
  t.ok(refused.every((a) => /^too many sign-in attempts/.test(String(a.json?.error))), 'each says why');

  // The right password now: the user is locked out for a while (the guesser may have it right).
  const right = await console_.call('', 'POST', '/api/login', { user: 'sgt1', password: 'pw-1' });
  t.equal(right.status, 429, 'the attacked user is locked out, even with the right password');
  t.match(right.json, { error: /sgt1 is locked/ });
  const line = await console_.waitForLog(/sign-in locked for "sgt1"/, 'the lockout');
  t.pass(`logged: ${line}`);
});

t.test('a password hash runs off the event loop', async (t) => {
  // Four hashes started, then one turn of the event loop: with the synchronous scrypt of before,
  // all four were computed (holding everything else up) before the loop could turn.
  const stored = hashPassword('correct horse');
  const order: string[] = [];
  const hashes = Array.from({ length: 4 }, () => Promise.resolve(verifyPassword('wrong', stored)).then(() => order.push('hash')));
  await new Promise((resolve) => setImmediate(resolve));
  order.push('loop turned');
  await Promise.all(hashes);
  t.equal(order[0], 'loop turned', `the event loop turned while the hashes ran (${order.join(', ')})`);
});
