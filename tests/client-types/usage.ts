// Uses the demo's services through the Feathers client types and the declarations that
// `gateway-example client-types` prints (copied here as plume-services.d.ts by
// scripts/client-types.sh). Only type-checked (tsc --noEmit), never run.
import { feathers } from '@feathersjs/feathers';
import type { NewTodo, Paginated, ServiceTypes, Todo } from './plume-services.js';

const app = feathers<ServiceTypes>();

export async function useTodos(): Promise<string[]> {
  const todos = app.service('todos');
  const data: NewTodo = { text: 'typed from TypeScript' };
  const created: Todo = await todos.create(data);
  const one: Todo = await todos.get(created.id);
  const patched: Todo = await todos.patch(one.id, { done: true });
  const removed: Todo = await todos.remove(patched.id);
  const result = await todos.find({ query: { $limit: 5, done: false } });
  const page: Todo[] = Array.isArray(result) ? result : (result as Paginated<Todo>).data;
  // Misuses the declarations must refuse (tsc fails if any of these is accepted):
  // @ts-expect-error text is a string
  await todos.create({ text: 42 });
  // @ts-expect-error a todo's id is a string
  await todos.get(7);
  // @ts-expect-error `replica` is not a field a client may set
  await todos.patch(one.id, { replica: 'other' });
  // @ts-expect-error the todos service has no update
  await todos.update(one.id, data);
  // @ts-expect-error get answers a Todo, not a number
  const wrong: number = await todos.get(one.id);
  return [removed.text, wrong.toString(), ...page.map((t) => t.replica)];
}
