// A deliberate misuse: scripts/client-types.sh checks that tsc refuses it (data of the wrong
// type for the todos service's create), so the declarations are known to constrain calls.
import { feathers } from '@feathersjs/feathers';
import type { ServiceTypes } from './plume-services.js';

const app = feathers<ServiceTypes>();

export async function misuse(): Promise<void> {
  await app.service('todos').create({ text: 42 });
}
