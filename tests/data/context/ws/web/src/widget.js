import { add } from "./math.js";

export default class Widget {
  render() { return add(1, 2); }
}
