// "At your table": who the server seated with you because your phones hear one another,
// and buttons to correct it by hand (docs/protocol.md, `table` and `set_table`).
//
// The page gives it the roster (`showPeople`) and each `table` message (`showTable`);
// it calls `setTable(id, together)` with true, false or null (back to what the
// microphones say).
(function (BF) {
  'use strict';

  function namesOf(ids, people) {
    return ids.map((id) => (people.get(id) || { name: '?' }).name);
  }

  // "Dan", "Dan and Marek", "Dan, Marek and Pierre".
  function listed(names) {
    if (names.length < 2) return names.join('');
    return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
  }

  function button(text, title, onClick) {
    const element = document.createElement('button');
    element.type = 'button';
    element.className = 'link-button';
    element.textContent = text;
    element.title = title;
    element.addEventListener('click', onClick);
    return element;
  }

  class TablePanel {
    constructor(box, setTable) {
      this.box = box;
      this.setTable = setTable;
      this.people = new Map();
      this.me = null;
      this.members = [];
      this.overrides = {};
    }

    showPeople(participants, me) {
      this.me = me;
      this.people = new Map(participants.map((person) => [person.id, person]));
      this.render();
    }

    showTable(msg) {
      this.members = Array.isArray(msg.members) ? msg.members : [];
      this.overrides = msg.overrides && typeof msg.overrides === 'object' ? msg.overrides : {};
      this.render();
    }

    clear() {
      this.people.clear();
      this.members = [];
      this.overrides = {};
      this.render();
    }

    render() {
      const members = this.members.filter((id) => this.people.has(id));
      const others = [...this.people.keys()].filter((id) => id !== this.me && !members.includes(id));
      this.box.replaceChildren();
      this.box.hidden = this.people.size < 2;
      if (this.box.hidden) return;

      const summary = document.createElement('p');
      summary.className = 'table-summary';
      summary.textContent = members.length
        ? `At your table: ${listed(namesOf(members, this.people))}`
        : 'No one else seems to be at your table.';
      this.box.append(summary);

      const list = document.createElement('ul');
      list.className = 'table-list';
      for (const id of [...members, ...others]) {
        const seated = members.includes(id);
        const name = this.people.get(id).name;
        const item = document.createElement('li');
        item.textContent = `${name} `;
        if (id in this.overrides) {
          item.append(button('Undo', `Let the microphones decide whether ${name} is at your table`,
            () => this.setTable(id, null)));
        } else if (seated) {
          item.append(button('Not at my table', `${name} is not in the same room as you`,
            () => this.setTable(id, false)));
        } else {
          item.append(button('At my table', `${name} is sitting with you`,
            () => this.setTable(id, true)));
        }
        if (!seated && !(id in this.overrides)) item.className = 'muted';
        list.append(item);
      }
      this.box.append(list);
    }
  }

  BF.TablePanel = TablePanel;
  BF.table = { listed };
})(window.BF = window.BF || {});
