// Short notices ("Deleted … Undo") shown by the shell; views reach them through context.
import { createContext } from "preact";
import { useContext } from "preact/hooks";

export const Notices = createContext(() => {});

/** `notify({text, action?: {label, run}, focus?, onClose?(how), timeout?})` shows a notice; returns a function closing it. */
export const useNotify = () => useContext(Notices);
